// The player page: /player.html?stream=NAME[&lib=flvjs][&force=1]
//
// Before playing, it asks /api/streams for the stream's codecs and this browser (and the
// chosen library) whether it can play them (codecs.js). A stream it can't play is not
// retried: the page says why in words and how to play it elsewhere (ffplay, VLC).
// `force=1` tries anyway. While playing it shows what the server knows (viewers,
// publisher bitrate, codecs) next to what the player measures.
import { el, liveUrls, loadScript, showMissingVendor, copyText, desktopPlayCommands, formatBitrate } from './common.js';
import { LivePlayer, LIBRARY_SCRIPTS } from './live-player.js';
import { LIB_NAMES, audioWords, mimeInWords, playability, videoWords } from './codecs.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const stream = (params.get('stream') || '').trim();
const lib = params.get('lib') === 'flvjs' ? 'flvjs' : 'mpegts';
const libName = LIB_NAMES[lib];
/** Play even what the checks say can't play (`force=1`, or "Reconnect now" on that notice). */
let forced = params.get('force') === '1';
const API_REFRESH_MS = 2000;

/** For tests and the console: the LivePlayer, or null while none runs. */
window.wsrelayPlayer = null;
/** For tests and the console: the last playability verdict (codecs.js), or null. */
window.wsrelayVerdict = null;

const STATE_CLASS = { playing: 'ok', buffering: 'warn', loading: 'warn', retrying: 'bad', error: 'bad', unsupported: 'bad' };
const STATE_WORDS = { unsupported: "can't play here" };

let player = null;
/** The stream's entry in /api/streams: undefined before the first answer, null when not listed. */
let entry;

function setState(state) {
  $('state').textContent = STATE_WORDS[state] || state;
  $('state').className = `badge ${STATE_CLASS[state] || ''}`;
}

function render(s) {
  setState(s.state);
  $('detail').textContent = s.detail || '–';
  $('resolution').textContent = s.width && s.height ? `${s.width}×${s.height}` : '–';
  const libCodecs = [s.videoCodec, s.audioCodec].filter(Boolean).join(', ');
  $('codecs').textContent = libCodecs ? mimeInWords(libCodecs) || libCodecs : '–';
  $('codecs').title = libCodecs ? `What ${libName} hands to the browser: ${libCodecs}` : '';
  $('fps').textContent = s.fps ? `${Number(s.fps).toFixed(2)} fps` : '–';
  $('buffer').textContent = `${s.bufferS.toFixed(2)} s`;
  $('latency').textContent = s.behindLiveS === null ? '–' : `≈ ${s.behindLiveS.toFixed(1)} s`;
  $('startup').textContent = s.startupMs === null ? '–' : `${s.startupMs} ms`;
  $('speed').textContent = s.speedKBps ? `${Math.round(s.speedKBps * 8)} kb/s` : '–';
  $('decoded').textContent = String(s.decodedFrames);
  $('dropped').textContent = String(s.droppedFrames);
  $('played').textContent = `${s.playedS.toFixed(1)} s`;
  $('restarts').textContent = String(s.restarts);
}

/** What the server says about the stream. */
function renderServer() {
  $('video-info').textContent = (entry && videoWords(entry.video)) || (entry ? 'none' : '–');
  $('audio-info').textContent = (entry && audioWords(entry.audio)) || (entry ? 'none' : '–');
  $('viewers').textContent = entry ? String(entry.players ?? '–') : '–';
  $('bitrate').textContent = entry ? formatBitrate(entry.bitrate_kbps) : '–';
}

/** The stream's entry from /api/streams; null when not listed, undefined when the API failed. */
async function fetchEntry() {
  try {
    const res = await fetch('/api/streams', { cache: 'no-store' });
    if (!res.ok) return undefined;
    const data = await res.json();
    return (data.streams || []).find((s) => s.name === stream) || null;
  } catch {
    return undefined;
  }
}

function notice(kind, ...children) {
  const box = $('notice');
  box.hidden = false;
  box.classList.toggle('error', kind === 'error');
  box.replaceChildren(...children.filter((c) => c !== null && c !== undefined));
}

/** "Play it with ffplay …, or VLC" with the commands to copy. */
function elsewhere() {
  const cmd = desktopPlayCommands(stream);
  const code = el('code', { class: 'copyable', title: 'Click to copy' }, cmd.ffplay);
  code.addEventListener('click', () => copyText(cmd.ffplay));
  return el('p', { class: 'small' },
    'Play it outside the browser: ', code,
    ', or in VLC (Media → Open Network Stream) with the HTTP-FLV URL below.');
}

function libLink(other) {
  const q = new URLSearchParams(params);
  q.set('lib', other);
  q.delete('force');
  return el('a', { href: `?${q}` }, `play with ${LIB_NAMES[other]}`);
}

/** The page's answer for a stream this browser can't play: words, not a retry loop. */
function showUnplayable(verdict) {
  setState('unsupported');
  $('detail').textContent = verdict.message;
  const q = new URLSearchParams(params);
  q.set('force', '1');
  notice('error',
    el('strong', {}, verdict.message),
    verdict.hint ? el('p', { class: 'small' }, verdict.hint) : null,
    verdict.otherLib ? el('p', { class: 'small' }, 'Try ', libLink(verdict.otherLib), ' instead.') : null,
    elsewhere(),
    el('p', { class: 'small muted' },
      'Browsers play H.264 video with AAC or MP3 audio everywhere; publish that for web viewers. ',
      el('a', { href: `?${q}` }, 'Try anyway'), '.'));
}

/** The verdict's remark that does not stop playback (audio left out, a known caveat), or null. */
let remark = null;

function showRemarkOrHide() {
  if (remark) notice('warn', ...remark);
  else $('notice').hidden = true;
}

function codecKey(e) {
  return e ? `${e.video && e.video.codec}/${e.audio && e.audio.codec}` : '';
}

let shownKey = null;

/** Start, keep, restart or stop the player for what the server now says. */
function decide() {
  const verdict = entry ? playability(entry, lib) : null;
  window.wsrelayVerdict = verdict;
  const key = codecKey(entry);
  if (verdict && !verdict.playable && !forced) {
    if (player) {
      player.stop();
      player = null;
      window.wsrelayPlayer = null;
    }
    if (shownKey !== key) showUnplayable(verdict);
    shownKey = key;
    return;
  }
  const hasAudio = verdict && verdict.hasAudio === false ? false : undefined;
  const codecsChanged = shownKey !== null && key !== '' && key !== shownKey;
  if (player && (player.options.hasAudio !== hasAudio || (codecsChanged && player.state === 'error'))) {
    player.stop();
    player = null;
  }
  if (verdict && (codecsChanged || shownKey === null)) {
    const text = [verdict.playable ? verdict.message : null, verdict.caveat].filter(Boolean).join(' ');
    remark = text ? [text, verdict.otherLib ? el('span', {}, ' ', libLink(verdict.otherLib), '.') : ''] : null;
    showRemarkOrHide();
  }
  if (verdict) shownKey = key;
  if (!player) startPlayer(hasAudio);
}

function startPlayer(hasAudio) {
  const urls = liveUrls(stream);
  const video = $('video');
  const p = new LivePlayer(video, urls.ws, { lib, hasAudio });
  player = p;
  window.wsrelayPlayer = p;
  p.addEventListener('stats', (e) => render(e.detail));
  p.addEventListener('state', (e) => {
    if (player !== p) return;
    render(p.stats());
    const { state, detail } = e.detail;
    if (state === 'playing') showRemarkOrHide();
    if (state === 'retrying' && entry === null) {
      notice('warn', `"${stream}" is not live right now. The page keeps trying and resumes on its own when it is back.`);
    }
    if (state === 'error') {
      notice('error', el('strong', {}, `Can't play this stream: ${detail}.`), elsewhere(),
        el('p', { class: 'small muted' }, 'The page does not retry this on its own; "Reconnect now" tries again.'));
    }
  });
  p.start();
}

async function refresh() {
  const e = await fetchEntry();
  if (e === undefined) return; // the API failed: keep what we know
  const wasListed = Boolean(entry);
  entry = e;
  renderServer();
  if (entry || wasListed) decide();
  if (!entry && player && player.state === 'retrying') {
    notice('warn', `"${stream}" is not live right now. The page keeps trying and resumes on its own when it is back.`);
  }
}

async function main() {
  if (!stream) {
    $('pick').hidden = false;
    $('title').textContent = 'Play a stream';
    return;
  }
  document.title = `${stream} · wsrelay`;
  $('title').textContent = stream;
  $('player').hidden = false;
  $('lib-name').textContent = libName;
  const other = new URLSearchParams(params);
  other.set('lib', lib === 'flvjs' ? 'mpegts' : 'flvjs');
  $('lib-switch').href = `?${other}`;
  $('lib-switch').textContent = `use ${lib === 'flvjs' ? 'mpegts.js' : 'flv.js'}`;

  const urls = liveUrls(stream);
  $('url-ws').value = urls.ws;
  $('url-http').value = urls.http;
  for (const id of ['url-ws', 'url-http']) {
    $(id).addEventListener('focus', (e) => { e.target.select(); copyText(e.target.value); });
  }
  $('embed').textContent =
    `<script src="${location.origin}${LIBRARY_SCRIPTS[lib]}"></script>\n` +
    `<video id="v" muted autoplay playsinline controls></video>\n` +
    `<script type="module">\n` +
    `  import { LivePlayer } from '${location.origin}/js/live-player.js';\n` +
    `  new LivePlayer(document.getElementById('v'), '${urls.ws}'` +
    `${lib === 'flvjs' ? ", { lib: 'flvjs' }" : ''}).start();\n` +
    `</script>`;

  const video = $('video');
  $('unmute').addEventListener('click', () => {
    video.muted = !video.muted;
    if (!video.muted) video.play().catch(() => {});
  });
  const showMuted = () => { $('unmute').textContent = video.muted ? 'Unmute' : 'Mute'; };
  video.addEventListener('volumechange', showMuted);
  showMuted();
  $('reconnect').addEventListener('click', () => {
    if (player) player.reconnect();
    else {
      // Stopped as unplayable: the user asks to try anyway.
      forced = true;
      startPlayer(undefined);
    }
  });

  try {
    await loadScript(LIBRARY_SCRIPTS[lib]);
  } catch {
    showMissingVendor($('notice'), libName, LIBRARY_SCRIPTS[lib]);
    $('state').textContent = 'no library';
    $('state').className = 'badge bad';
    return;
  }

  entry = await fetchEntry();
  renderServer();
  if (entry === undefined) entry = null;
  decide();
  setInterval(refresh, API_REFRESH_MS);
}

main().catch((err) => {
  notice('error', el('strong', {}, 'The player page failed: '), String(err && err.message ? err.message : err));
});
