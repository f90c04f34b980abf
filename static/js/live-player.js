// LivePlayer: plays a wsrelay live stream (WS-FLV or HTTP-FLV) in a <video> with
// mpegts.js or flv.js, tuned for low latency, and keeps it playing: when the stream
// ends, errors or stalls it retries with exponential backoff until the stream is back.
// ES module, no build step. The player library itself is a classic script that must be
// loaded first (it defines the global `mpegts` or `flvjs`):
//
//   <script src="/vendor/mpegts.js/dist/mpegts.js"></script>
//   <video id="v" muted autoplay playsinline></video>
//   <script type="module">
//     import { LivePlayer } from '/js/live-player.js';
//     const player = new LivePlayer(document.getElementById('v'),
//                                   'ws://localhost:8080/live/cam1.flv');
//     player.addEventListener('state', (e) => console.log(e.detail.state, e.detail.detail));
//     player.start();
//   </script>
//
// States (event `state`, detail `{state, detail}`):
//   idle → loading → playing ⇄ buffering;  any → retrying → loading …;  stop() → stopped;
//   any → error: a failure retrying cannot fix (the browser or the library can't play the
//   stream's codecs, no MSE): no more attempts until reconnect(). `detail` is in words.
// Other events: `mediainfo` (detail: the library's media info), `stats` (detail:
// `stats()`, about every `tickMs`). `stats().startupMs` is the time from connecting to
// the first frame playing (the time to first frame of the current connection);
// `stats().behindLiveS` estimates how far the picture is behind the live edge (see
// `_tick`).

import { mimeInWords } from './codecs.js';

/** Tuning shared by both libraries. Each field can be overridden in the constructor. */
export const DEFAULT_OPTIONS = Object.freeze({
  /** 'mpegts' (default, maintained) or 'flvjs'. */
  lib: 'mpegts',
  /** Restart when the playhead has not moved for this long while we expect media. */
  stallTimeoutMs: 8000,
  /** First retry delay after an end or error; doubles per failed attempt. */
  initialBackoffMs: 1000,
  /** Upper bound of the retry delay. */
  maxBackoffMs: 10000,
  /** Jump to the live edge when more than this much media is buffered (seconds). */
  maxLatencyS: 1.5,
  /** Where a jump lands: this many seconds behind the newest buffered media. */
  targetLatencyS: 0.5,
  /** How often stats are sampled and the watchdog runs. */
  tickMs: 500,
  /** false: ignore the stream's audio (a codec the browser can't play); undefined: auto. */
  hasAudio: undefined,
  /** false: ignore the stream's video; undefined: auto. */
  hasVideo: undefined,
  /** Give up (state `error`) after this many media format errors in a row without playback. */
  maxFormatErrors: 3,
});

/** Library-specific low-latency config passed to `createPlayer`. */
function libraryConfig(lib, o) {
  const common = {
    enableWorker: false,
    enableStashBuffer: false, // hand every byte to the demuxer at once: lowest latency
    isLive: true,
    lazyLoad: false, // a live stream must never pause its download
    autoCleanupSourceBuffer: true, // bound memory on long sessions
    autoCleanupMaxBackwardDuration: 30,
    autoCleanupMinBackwardDuration: 10,
  };
  if (lib === 'flvjs') return common; // flv.js has no chasing of its own; tick() does it
  return {
    ...common,
    liveBufferLatencyChasing: true, // jump forward when the buffer grows too large
    liveBufferLatencyMaxLatency: o.maxLatencyS,
    liveBufferLatencyMinRemain: Math.min(o.targetLatencyS, o.maxLatencyS / 2),
    liveSync: true, // and before that, speed playback up slightly
    liveSyncMaxLatency: Math.max(0.8, o.maxLatencyS * 0.6),
    liveSyncTargetLatency: o.targetLatencyS,
    liveSyncPlaybackRate: 1.2,
  };
}

/** The global the library script defines, or null when it was not loaded. */
export function libraryGlobal(lib) {
  return (lib === 'flvjs' ? globalThis.flvjs : globalThis.mpegts) || null;
}

/** Where wsrelay serves each library from (vendored copies built into the binary). */
export const LIBRARY_SCRIPTS = Object.freeze({
  mpegts: '/vendor/mpegts.js/dist/mpegts.js',
  flvjs: '/vendor/flv.js/dist/flv.min.js',
});

export class LivePlayer extends EventTarget {
  /**
   * @param {HTMLVideoElement} video
   * @param {string} url `ws(s)://host/live/NAME.flv` or `http(s)://host/live/NAME.flv`
   * @param {Partial<typeof DEFAULT_OPTIONS>} [options]
   */
  constructor(video, url, options = {}) {
    super();
    this.video = video;
    this.url = url;
    this.options = { ...DEFAULT_OPTIONS, ...options };
    this.lib = this.options.lib === 'flvjs' ? 'flvjs' : 'mpegts';
    this.state = 'idle';
    this.detail = '';
    this.mediaInfo = null;
    this.restarts = 0;
    this._player = null;
    this._attempt = 0;
    this._retryTimer = 0;
    this._tickTimer = 0;
    this._speedKBps = 0;
    this._frameBase = { decoded: 0, dropped: 0 };
    this._played = 0; // seconds of media played, summed over reconnects
    this._playedSinceStart = 0;
    this._lastTime = 0;
    this._lastTick = 0;
    this._lastProgress = 0; // wall clock of the last playhead move
    this._loadStarted = 0;
    this._formatErrors = 0; // media errors in a row without playback
    this._edgeOffsetS = null; // newest buffered media minus wall time since connecting
    /** Time from connecting to the first frame playing, for the current connection. */
    this.startupMs = null;
    this._onVideoEvent = (e) => this._videoEvent(e.type);
  }

  /** Start playing (and keep retrying) until stop(). */
  start() {
    if (this._tickTimer) return;
    for (const t of ['playing', 'waiting', 'error']) this.video.addEventListener(t, this._onVideoEvent);
    this._tickTimer = setInterval(() => this._tick(), this.options.tickMs);
    this._load();
  }

  /** Stop for good and release the video element. */
  stop() {
    clearTimeout(this._retryTimer);
    clearInterval(this._tickTimer);
    this._tickTimer = 0;
    for (const t of ['playing', 'waiting', 'error']) this.video.removeEventListener(t, this._onVideoEvent);
    this._destroyPlayer();
    this._setState('stopped', '');
  }

  /** Drop the current connection and connect again now (resets the backoff). */
  reconnect() {
    this._attempt = 0;
    this._formatErrors = 0;
    clearTimeout(this._retryTimer);
    this._destroyPlayer();
    this.restarts += 1;
    this._load();
  }

  /** A snapshot of what a user wants to see. */
  stats() {
    const v = this.video;
    const q = typeof v.getVideoPlaybackQuality === 'function' ? v.getVideoPlaybackQuality() : null;
    const b = v.buffered;
    const bufferS = b && b.length > 0 ? Math.max(0, b.end(b.length - 1) - v.currentTime) : 0;
    const mi = this.mediaInfo || {};
    return {
      state: this.state,
      detail: this.detail,
      lib: this.lib,
      width: v.videoWidth || mi.width || 0,
      height: v.videoHeight || mi.height || 0,
      videoCodec: mi.videoCodec || null,
      audioCodec: mi.audioCodec || null,
      fps: mi.fps || null,
      currentTime: v.currentTime,
      bufferS,
      speedKBps: this._speedKBps,
      decodedFrames: this._frameBase.decoded + (q ? q.totalVideoFrames : 0),
      droppedFrames: this._frameBase.dropped + (q ? q.droppedVideoFrames : 0),
      playedS: this._played,
      startupMs: this.startupMs,
      restarts: this.restarts,
      behindLiveS: this._behindLive(),
    };
  }

  // ---- internals ----------------------------------------------------------------

  _setState(state, detail = '') {
    if (state === this.state && detail === this.detail) return;
    this.state = state;
    this.detail = detail;
    this.dispatchEvent(new CustomEvent('state', { detail: { state, detail } }));
  }

  _load() {
    const lib = libraryGlobal(this.lib);
    if (!lib) {
      this._setState('error', `${this.libName} is not loaded`);
      return;
    }
    // Not lib.isSupported(): mpegts.js answers it by asking for H.264, which says
    // nothing about a stream in another codec.
    if (typeof globalThis.MediaSource !== 'function' && typeof globalThis.ManagedMediaSource !== 'function') {
      this._setState('error', "this browser has no Media Source Extensions, which the web player needs");
      return;
    }
    this._setState('loading', 'connecting');
    const source = { type: 'flv', isLive: true, url: this.url };
    if (this.options.hasAudio === false) source.hasAudio = false;
    if (this.options.hasVideo === false) source.hasVideo = false;
    const player = lib.createPlayer(source, libraryConfig(this.lib, this.options));
    this._player = player;
    const E = lib.Events;
    player.on(E.ERROR, (type, detail, info) => {
      if (this._player !== player) return;
      const { words, fatal } = this._describeError(type, detail, info);
      if (fatal) this._giveUp(words);
      else this._fail(words);
    });
    player.on(E.LOADING_COMPLETE, () => {
      if (this._player === player) this._fail('the stream ended');
    });
    player.on(E.MEDIA_INFO, (mi) => {
      if (this._player !== player) return;
      this.mediaInfo = mi;
      this.dispatchEvent(new CustomEvent('mediainfo', { detail: mi }));
    });
    player.on(E.STATISTICS_INFO, (si) => {
      if (this._player === player && si && Number.isFinite(si.speed)) this._speedKBps = si.speed;
    });
    player.attachMediaElement(this.video);
    player.load();
    this._lastProgress = performance.now();
    this._loadStarted = this._lastProgress;
    this.startupMs = null;
    this._lastTime = 0;
    this._playedSinceStart = 0;
    this._edgeOffsetS = null;
    const p = player.play();
    if (p && typeof p.catch === 'function') {
      p.catch((err) => {
        // Browsers refuse autoplay with sound until the user interacted with the page:
        // play muted then (the page offers an unmute button).
        if (err && err.name === 'NotAllowedError' && !this.video.muted && this._player === player) {
          this.video.muted = true;
          this.video.play().catch(() => {});
        }
      });
    }
  }

  _destroyPlayer() {
    const player = this._player;
    this._player = null;
    this._speedKBps = 0;
    if (!player) return;
    const q = typeof this.video.getVideoPlaybackQuality === 'function' ? this.video.getVideoPlaybackQuality() : null;
    if (q) {
      this._frameBase.decoded += q.totalVideoFrames;
      this._frameBase.dropped += q.droppedVideoFrames;
    }
    for (const step of ['pause', 'unload', 'detachMediaElement', 'destroy']) {
      try {
        player[step]();
      } catch {
        // A half-initialised player may refuse some steps; destroy what we can.
      }
    }
  }

  get libName() {
    return this.lib === 'flvjs' ? 'flv.js' : 'mpegts.js';
  }

  /**
   * A library error in words, and whether retrying can help. Codec refusals (by the
   * library or by the browser's MSE) cannot; format errors get `maxFormatErrors` tries.
   */
  _describeError(type, detail, info) {
    const msg = String((info && (info.msg || info.message)) || '');
    const code = info && info.code;
    const media = (text) => {
      // "Flv: Unsupported codec in video frame: vp09" → "vp09"
      const m = /codec[^:]*:\s*(\S+)/i.exec(text);
      return m ? m[1] : '';
    };
    switch (detail) {
      case 'HttpStatusCodeInvalid':
        if (code === 404) return { words: 'the stream is not live', fatal: false };
        if (code === 401 || code === 403) return { words: `the server refused to play it (${code}): a token may be needed`, fatal: true };
        return { words: `the server answered ${code}`, fatal: false };
      case 'ConnectingTimeout':
        return { words: 'connecting to the server timed out', fatal: false };
      case 'UnrecoverableEarlyEof':
        return { words: 'the connection ended early', fatal: false };
      case 'Exception':
        return { words: 'lost the connection to the server', fatal: false };
      case 'CodecUnsupported': {
        const what = media(msg);
        return { words: `${this.libName} can't play this stream's codec${what ? ` (${what})` : ''}`, fatal: true };
      }
      case 'FormatUnsupported':
        return { words: `${this.libName} can't read this stream: it is not FLV`, fatal: true };
      case 'FormatError': {
        this._formatErrors += 1;
        const fatal = this._formatErrors >= this.options.maxFormatErrors;
        return { words: `${this.libName} could not read the stream (${msg.replace(/^Flv:\s*/, '') || 'format error'})`, fatal };
      }
      case 'MediaMSEError':
        if (/addSourceBuffer|not supported|unsupported|NotSupportedError/i.test(msg)) {
          const what = mimeInWords(msg);
          return { words: `this browser can't decode the stream's ${what || 'media'}`, fatal: true };
        }
        return { words: "the browser's media decoder failed", fatal: false };
      default:
        if (type === 'NetworkError') return { words: 'a network error', fatal: false };
        return { words: `the player failed (${[type, detail].filter(Boolean).join(', ')})`, fatal: false };
    }
  }

  /** Stop trying: a failure that retrying cannot fix. */
  _giveUp(reason) {
    clearTimeout(this._retryTimer);
    this._destroyPlayer();
    this._setState('error', reason);
  }

  /** Seconds the picture is behind the live edge (estimate, see `_tick`), or null. */
  _behindLive() {
    if (this._edgeOffsetS === null || !this._player) return null;
    const sinceConnect = (performance.now() - this._loadStarted) / 1000;
    return Math.max(0, this._edgeOffsetS + sinceConnect - this.video.currentTime);
  }

  _fail(reason) {
    if (!this._player && this.state === 'retrying') return;
    this._destroyPlayer();
    const base = Math.min(this.options.maxBackoffMs, this.options.initialBackoffMs * 2 ** this._attempt);
    const delay = Math.round(base / 2 + Math.random() * (base / 2));
    this._attempt += 1;
    this.restarts += 1;
    this._setState('retrying', `${reason} — retrying in ${(delay / 1000).toFixed(1)} s`);
    clearTimeout(this._retryTimer);
    this._retryTimer = setTimeout(() => {
      if (this._tickTimer) this._load();
    }, delay);
  }

  _videoEvent(type) {
    if (!this._player) return;
    if (type === 'playing') {
      if (this.startupMs === null) this.startupMs = Math.round(performance.now() - this._loadStarted);
      this._setState('playing', '');
    }
    else if (type === 'waiting') this._setState('buffering', 'waiting for data');
    else if (type === 'error') {
      const err = this.video.error;
      // 4 = MEDIA_ERR_SRC_NOT_SUPPORTED: retrying the same media cannot help.
      if (err && err.code === 4) this._giveUp("this browser can't decode the stream's media");
      else this._fail(`the browser could not decode the video${err && err.code === 3 ? ' (a decoding error)' : ''}`);
    }
  }

  _tick() {
    const now = performance.now();
    const v = this.video;
    if (this._player) {
      const t = v.currentTime;
      const wall = (now - (this._lastTick || now)) / 1000;
      const moved = t - this._lastTime;
      if (moved > 0.001) {
        // Count real playback only, not jumps to the live edge.
        const counted = Math.min(moved, wall * 2 + 0.05);
        this._played += counted;
        this._playedSinceStart += counted;
        this._lastProgress = now;
        if (this._playedSinceStart > 3) {
          this._attempt = 0; // healthy again: reset backoff
          this._formatErrors = 0;
        }
        if (this.state !== 'playing' && !v.paused) this._setState('playing', '');
      }
      this._lastTime = t;
      const b = v.buffered;
      if (b.length > 0) {
        const end = b.end(b.length - 1);
        // Live edge estimate: the server sends the cached GOP at once on connecting,
        // then media as it arrives, so the newest buffered media minus the wall time
        // since connecting, at its highest, is where the live edge was when we
        // connected; the edge moves on with wall time. What the picture is behind it:
        // this edge minus currentTime (buffer + network stalls + jumps), not counting
        // the fixed delay of the encoder and the network before the first byte.
        const offset = end - (now - this._loadStarted) / 1000;
        if (this._edgeOffsetS === null || offset > this._edgeOffsetS) this._edgeOffsetS = offset;
        const start = b.start(b.length - 1);
        // Playhead before the buffered range (startup gap) or far behind the live edge:
        // jump. mpegts.js chases on its own; this is flv.js's and a safety net.
        const limit = this.lib === 'flvjs' ? this.options.maxLatencyS : this.options.maxLatencyS * 2;
        if (t < start - 0.05 || end - t > limit) {
          v.currentTime = Math.max(start, end - this.options.targetLatencyS);
        }
        if (v.paused && end > t + 0.2) v.play().catch(() => {});
      }
      if (now - this._lastProgress > this.options.stallTimeoutMs) {
        this._fail(`no progress for ${Math.round(this.options.stallTimeoutMs / 1000)} s`);
      }
    }
    this._lastTick = now;
    this.dispatchEvent(new CustomEvent('stats', { detail: this.stats() }));
  }
}
