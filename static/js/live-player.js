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
//   idle → loading → playing ⇄ buffering;  any → retrying → loading …;  stop() → stopped.
// Other events: `mediainfo` (detail: the library's media info), `stats` (detail:
// `stats()`, about every `tickMs`). `stats().startupMs` is the time from connecting to
// the first frame playing (the time to first frame of the current connection).

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

/** Where wsrelay serves each library from (static/node_modules under /vendor/). */
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
      this._setState('error', `${this.lib === 'flvjs' ? 'flv.js' : 'mpegts.js'} is not loaded`);
      return;
    }
    if (typeof lib.isSupported === 'function' && !lib.isSupported()) {
      this._setState('error', 'this browser has no Media Source Extensions');
      return;
    }
    this._setState('loading', 'connecting');
    const player = lib.createPlayer(
      { type: 'flv', isLive: true, url: this.url },
      libraryConfig(this.lib, this.options),
    );
    this._player = player;
    const E = lib.Events;
    player.on(E.ERROR, (type, detail, info) => {
      if (this._player !== player) return;
      const why = info && (info.msg || info.code) ? `: ${info.msg || info.code}` : '';
      this._fail(`${detail || type}${why}`);
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
      this._fail(`video element error${err ? ` ${err.code}: ${err.message}` : ''}`);
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
        if (this._playedSinceStart > 3) this._attempt = 0; // healthy again: reset backoff
        if (this.state !== 'playing' && !v.paused) this._setState('playing', '');
      }
      this._lastTime = t;
      const b = v.buffered;
      if (b.length > 0) {
        const end = b.end(b.length - 1);
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
