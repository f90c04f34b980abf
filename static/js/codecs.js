// What this browser can play of a wsrelay stream, in words. ES module, no dependencies.
//
// A stream plays in a page when (1) the player library can read the codec from FLV and
// (2) the browser's Media Source Extensions can decode it. (1) is fixed per library
// version (static/vendor/README.md); (2) is asked with MediaSource.isTypeSupported.
// The codec names are those of /api/streams (`video.codec`, `audio.codec`).
//
//   import { playability } from '/js/codecs.js';
//   const p = playability(stream, 'mpegts');   // stream: an entry of /api/streams
//   if (!p.playable) show(p.message);            // "This browser can't play HEVC video."

/** Library ids → names shown to people. */
export const LIB_NAMES = Object.freeze({ mpegts: 'mpegts.js', flvjs: 'flv.js' });

/**
 * Video codecs: name in words, an MSE type to ask about, the libraries that read it
 * from FLV, and a caveat shown even when it plays.
 */
export const VIDEO = Object.freeze({
  h264: { name: 'H.264', mime: 'video/mp4; codecs="avc1.64001F"', libs: ['mpegts', 'flvjs'] },
  hevc: {
    name: 'HEVC (H.265)', mime: 'video/mp4; codecs="hvc1.1.6.L93.B0"', libs: ['mpegts'],
    hint: 'Browsers decode HEVC only where the system provides a decoder (Safari; Chrome or Edge with hardware decoding).',
  },
  av1: {
    name: 'AV1', mime: 'video/mp4; codecs="av01.0.04M.08"', libs: ['mpegts'],
    caveat: 'mpegts.js 1.8.2 may read the picture size of AV1 in FLV wrongly (a stretched picture).',
  },
  vp9: { name: 'VP9', mime: 'video/mp4; codecs="vp09.00.10.08"', libs: [] },
  vp8: { name: 'VP8', mime: 'video/webm; codecs="vp8"', libs: [] },
  h263: { name: 'Sorenson H.263', libs: [] },
  screen: { name: 'Screen Video', libs: [] },
  screen2: { name: 'Screen Video 2', libs: [] },
  vp6: { name: 'On2 VP6', libs: [] },
  vp6a: { name: 'On2 VP6 with alpha', libs: [] },
  vvc: { name: 'VVC (H.266)', libs: [] },
});

/** Audio codecs, as VIDEO. */
export const AUDIO = Object.freeze({
  aac: { name: 'AAC', mime: 'audio/mp4; codecs="mp4a.40.2"', libs: ['mpegts', 'flvjs'] },
  mp3: { name: 'MP3', mime: 'audio/mpeg', libs: ['mpegts', 'flvjs'] },
  opus: { name: 'Opus', mime: 'audio/mp4; codecs="opus"', libs: ['mpegts'] },
  flac: { name: 'FLAC', mime: 'audio/mp4; codecs="flac"', libs: ['mpegts'] },
  ac3: { name: 'AC-3', libs: [] },
  eac3: { name: 'E-AC-3', libs: [] },
  pcm: { name: 'PCM', libs: [] },
  speex: { name: 'Speex', libs: [] },
  adpcm: { name: 'ADPCM', libs: [] },
  nellymoser: { name: 'Nellymoser', libs: [] },
  pcm_alaw: { name: 'G.711 A-law', libs: [] },
  pcm_mulaw: { name: 'G.711 µ-law', libs: [] },
});

/** The codec's name in words: 'hevc' → 'HEVC (H.265)'. */
export function codecName(kind, codec) {
  const table = kind === 'video' ? VIDEO : AUDIO;
  return (table[codec] && table[codec].name) || (codec && codec !== 'unknown' ? codec : `an unknown ${kind} codec`);
}

/** Whether MSE exists in this browser at all. */
export function hasMse() {
  return typeof globalThis.MediaSource === 'function' || typeof globalThis.ManagedMediaSource === 'function';
}

function mseSupports(mime) {
  const MS = globalThis.MediaSource || globalThis.ManagedMediaSource;
  if (!MS || typeof MS.isTypeSupported !== 'function' || !mime) return false;
  try {
    return MS.isTypeSupported(mime);
  } catch {
    return false;
  }
}

/**
 * One track's verdict for library `lib`.
 * @returns {{codec: string, name: string, ok: boolean, why: string, libs: string[], hint?: string, caveat?: string}}
 */
function track(kind, codec, lib) {
  const info = (kind === 'video' ? VIDEO : AUDIO)[codec] || { libs: [] };
  const name = codecName(kind, codec);
  const decodes = mseSupports(info.mime);
  const libs = decodes ? info.libs : [];
  let why = '';
  if (info.libs.length === 0) {
    why = `No browser player reads ${name} ${kind} from FLV (neither mpegts.js nor flv.js).`;
  } else if (!decodes) {
    why = `This browser can't play ${name} ${kind}.`;
  } else if (!info.libs.includes(lib)) {
    why = `${LIB_NAMES[lib]} can't read ${name} ${kind}; ${info.libs.map((l) => LIB_NAMES[l]).join(' or ')} can.`;
  }
  return { codec, name, ok: why === '', why, libs, hint: info.hint, caveat: info.caveat };
}

/**
 * What `lib` can play of `stream` (an entry of /api/streams) in this browser.
 *
 * - `playable`: something worth showing plays (the video; or the audio of an
 *   audio-only stream).
 * - `hasAudio` / `hasVideo`: false when that track must be ignored for the rest to
 *   play (e.g. Speex audio next to H.264 video: the video plays without sound).
 * - `message`: why not, or what is left out, in words (null when all plays).
 * - `otherLib`: the other library when it would play what `lib` can't.
 * - `caveat`: a known problem that remains even when it plays.
 */
export function playability(stream, lib = 'mpegts') {
  const v = stream && stream.video && stream.video.codec ? track('video', stream.video.codec, lib) : null;
  const a = stream && stream.audio && stream.audio.codec ? track('audio', stream.audio.codec, lib) : null;
  const result = {
    video: v, audio: a, playable: true, hasVideo: undefined, hasAudio: undefined,
    message: null, otherLib: null, caveat: (v && v.ok && v.caveat) || null, hint: null,
  };
  if (!hasMse()) {
    return { ...result, playable: false, message: "This browser has no Media Source Extensions, which the web player needs." };
  }
  const other = lib === 'flvjs' ? 'mpegts' : 'flvjs';
  const broken = [v, a].filter((t) => t && !t.ok);
  if (broken.length === 0) return result;
  if (broken.every((t) => t.libs.includes(other))) result.otherLib = other;
  result.hint = broken.map((t) => t.hint).find(Boolean) || null;
  if (v && !v.ok) {
    result.playable = false;
    result.message = a && !a.ok && a.why !== v.why ? `${v.why} ${a.why}` : v.why;
  } else if (a && !a.ok && v) {
    result.hasAudio = false;
    result.message = `${a.why} The video plays without sound.`;
  } else if (a && !a.ok) {
    result.playable = false;
    result.message = a.why;
  }
  return result;
}

/** An MSE type string in words: 'video/mp4;codecs=avc1.640028' → 'H.264'. */
export function mimeInWords(text) {
  const words = [];
  const add = (re, name) => { if (re.test(text) && !words.includes(name)) words.push(name); };
  add(/avc[13]/i, 'H.264');
  add(/hvc1|hev1/i, 'HEVC (H.265)');
  add(/av01/i, 'AV1');
  add(/vp0?9/i, 'VP9');
  add(/mp4a/i, 'AAC');
  add(/opus/i, 'Opus');
  add(/flac/i, 'FLAC');
  add(/audio\/mpeg|mp3/i, 'MP3');
  return words.join(', ');
}

/** A stream's video in words: 'H.264 · 1280×720 · 30 fps', or null. */
export function videoWords(v) {
  if (!v) return null;
  const parts = [codecName('video', v.codec)];
  if (v.width && v.height) parts.push(`${v.width}×${v.height}`);
  if (v.fps) parts.push(`${Number(v.fps).toFixed(v.fps % 1 ? 2 : 0)} fps`);
  return parts.join(' · ');
}

/** A stream's audio in words: 'AAC · 44.1 kHz · stereo', or null. */
export function audioWords(a) {
  if (!a) return null;
  const parts = [codecName('audio', a.codec)];
  if (a.sample_rate) parts.push(`${(a.sample_rate / 1000).toFixed(1)} kHz`);
  if (a.channels) parts.push(a.channels === 1 ? 'mono' : a.channels === 2 ? 'stereo' : `${a.channels} channels`);
  return parts.join(' · ');
}
