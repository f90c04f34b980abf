// wsrelay signaling client — an ES module with no dependencies and no build step.
//
// Copy this file into your app, or import it from a wsrelay server:
//
//   import { SignalingClient } from '/js/signaling.js';
//
//   const client = new SignalingClient('wss://example.org/signal/my-room', {
//     meta: { name: 'Ada' },
//   });
//   client.on('statechange', ({ state }) => console.log('signaling is', state));
//   client.on('welcome', ({ peer, peers }) => console.log('I am', peer, 'with', peers));
//   client.on('peer-joined', ({ peer, polite }) => startCall(peer, polite));
//   client.on('offer', ({ from, sdp }) => handleOffer(from, sdp));  // sdp: {type, sdp}
//   client.on('message', ({ from, data }) => console.log(from, 'says', data));
//   client.connect();
//   client.message({ hello: 'everyone' });   // queued until the server welcomes us
//   ...
//   client.close();                          // sends `leave`, state becomes `closed`
//
// Connection states (event `statechange`, detail `{state, previous}`):
//
//   disconnected ──connect()──▶ connecting ──welcome──▶ connected
//                                    ▲                      │ socket lost / no pong
//                                    │ backoff timer        ▼
//                                    └──────────────── reconnecting
//   any state ──close() or fatal server error──▶ closed (final)
//
// * `connecting`: the socket is opening or the `join` was sent and no `welcome` yet.
// * `connected`: the server welcomed us; `peerId`, `session`, `peers` are set.
// * `reconnecting`: the socket was lost; a new one is attempted after an exponential
//   backoff with jitter. The new socket sends `join {resume: session}`, so the server
//   gives back the SAME peer id and delivers the messages it queued for us meanwhile.
//   If the server no longer knows the session (grace period over), the client joins
//   afresh and `welcome.resumed` is false.
// * `closed`: after `close()`, or when the server rejects us for good (a close code in
//   `FATAL_CLOSE_CODES`: unauthorized, protocol violation, room full, flood, or our
//   session resumed elsewhere). No more reconnects. Other closes (server restart
//   1001, join timeout 4002, idle 4005, slow reader 4006, network loss 1006) reconnect.
//
// Sending: `send(msg)` and its helpers (`offer`, `answer`, `candidate`, `message`)
// never lose a message while the client is not connected: messages are queued (bounded
// by `maxQueue`) and flushed in order right after the next `welcome`. `send` throws
// when the client is closed or the queue is full.
//
// Liveness: browsers cannot see WebSocket pings, so the client sends a JSON
// `{type:"ping"}` every `heartbeat_ms` (from `welcome`) and treats the socket as dead
// when nothing at all arrives for `pingTimeoutFactor` heartbeats; it then reconnects.
//
// Events (all `CustomEvent`s whose `detail` is the server message object, unless
// noted): `statechange` ({state, previous}), `welcome` (plus `resumed: boolean`),
// `peer-joined`, `peer-left`, `peer-reconnecting`, `peer-resumed`, `offer`, `answer`, `candidate`,
// `message`, `pong`, `error` (server `{code, message, id?}`; client-side problems use
// codes starting with `client-`), `reconnect-scheduled` ({delay, attempt, reason}),
// `unknown` (any other message type).
// `on(type, fn)` is a shortcut for addEventListener that passes `detail` and returns
// an unsubscribe function.
//
// Testing hook: `client._ws` is the current WebSocket (or null). It is not part of the
// API; tests may close it to simulate a lost connection.

/** Connection states, in the order a healthy client goes through them. */
export const States = Object.freeze({
  DISCONNECTED: 'disconnected',
  CONNECTING: 'connecting',
  CONNECTED: 'connected',
  RECONNECTING: 'reconnecting',
  CLOSED: 'closed',
});

/**
 * Options of {@link SignalingClient}. Every field is optional.
 * @typedef {object} SignalingOptions
 * @property {string} [peer] Wanted peer id; the server generates one when absent.
 * @property {string} [token] Auth token (JWT) for rooms that need one.
 * @property {object} [meta] Any JSON the other peers receive with `peer-joined`.
 * @property {boolean} [reconnect=true] Reconnect after a lost connection.
 * @property {number} [initialBackoffMs=250] First reconnect delay.
 * @property {number} [maxBackoffMs=10000] Upper bound of the reconnect delay.
 * @property {number} [backoffFactor=2] Growth of the delay per failed attempt.
 * @property {number} [connectTimeoutMs=10000] Give up on a socket that has not been
 *   welcomed within this time (and retry).
 * @property {number} [heartbeatMs=15000] Ping interval until the server's `welcome`
 *   tells its own `heartbeat_ms`.
 * @property {number} [pingTimeoutFactor=2.5] The connection is dead when nothing
 *   arrived for this many heartbeat intervals.
 * @property {number} [maxQueue=256] Most messages kept while not connected.
 * @property {typeof WebSocket} [WebSocket] WebSocket implementation (for Node or tests).
 */

const DEFAULTS = {
  reconnect: true,
  initialBackoffMs: 250,
  maxBackoffMs: 10000,
  backoffFactor: 2,
  connectTimeoutMs: 10000,
  heartbeatMs: 15000,
  pingTimeoutFactor: 2.5,
  maxQueue: 256,
};

/** Types the client handles itself or passes on as events of the same name. */
const KNOWN_TYPES = new Set([
  'welcome', 'peer-joined', 'peer-left', 'peer-reconnecting', 'peer-resumed',
  'offer', 'answer', 'candidate', 'message', 'pong', 'error',
]);

/**
 * Server close codes after which reconnecting cannot help (see the signaling
 * protocol's close codes): 4001 unauthorized, 4003 binary frame, 4004 session resumed
 * on another connection, 4007 not UTF-8, 4009 too large, 4013 room full, 4029 flood.
 */
export const FATAL_CLOSE_CODES = Object.freeze([4001, 4003, 4004, 4007, 4009, 4013, 4029]);

/**
 * Delay before reconnect attempt number `attempt` (0-based): exponential growth capped
 * at `max`, with "equal jitter" (half fixed, half random) so that many clients dropped
 * at once do not come back in lockstep.
 * @param {number} attempt
 * @param {{initialBackoffMs:number, maxBackoffMs:number, backoffFactor:number}} o
 * @param {() => number} [random]
 * @returns {number} milliseconds
 */
export function backoffDelay(attempt, o, random = Math.random) {
  const base = Math.min(o.maxBackoffMs, o.initialBackoffMs * o.backoffFactor ** attempt);
  return Math.round(base / 2 + random() * (base / 2));
}

/**
 * A wsrelay signaling connection to one room (`ws(s)://host/signal/ROOM`).
 * See the header of this file for states, events and an example.
 */
export class SignalingClient extends EventTarget {
  /**
   * @param {string} url `ws://` or `wss://` URL of the room, e.g. `wss://host/signal/room1`.
   * @param {SignalingOptions} [options]
   */
  constructor(url, options = {}) {
    super();
    /** @readonly */ this.url = url;
    this.options = { ...DEFAULTS, ...options };
    this._WebSocket = options.WebSocket || globalThis.WebSocket;
    /** @type {string} */ this._state = States.DISCONNECTED;
    /** @type {WebSocket|null} */ this._ws = null;
    /** @type {object[]} */ this._queue = [];
    this._attempt = 0;
    this._timers = { reconnect: 0, connect: 0, ping: 0, watchdog: 0 };
    this._lastSeen = 0;
    this._heartbeatMs = this.options.heartbeatMs;
    this._resumeTried = false;
    /** Our peer id, set by `welcome`. @type {string|null} */
    this.peerId = options.peer || null;
    /** Session token for resuming, set by `welcome`. @type {string|null} */
    this.session = null;
    /** ICE servers from the last `welcome` (RTCIceServer[]). */
    this.iceServers = [];
    /** The other peers: peer id → `{peer, meta, polite, reconnecting}`. @type {Map<string, object>} */
    this.peers = new Map();
  }

  /** Current state, one of {@link States}. */
  get state() {
    return this._state;
  }

  /**
   * Listen to an event; `fn` receives the event's `detail`.
   * @param {string} type
   * @param {(detail: any) => void} fn
   * @returns {() => void} call to unsubscribe
   */
  on(type, fn) {
    const listener = (e) => fn(e.detail);
    this.addEventListener(type, listener);
    return () => this.removeEventListener(type, listener);
  }

  /** Open the connection. Does nothing unless the state is `disconnected`. */
  connect() {
    if (this._state !== States.DISCONNECTED) return;
    this._open(States.CONNECTING);
  }

  /**
   * Send a protocol message (an object with a `type`). Queued while not connected.
   * @param {object} msg
   * @throws {Error} when closed or when the queue is full
   */
  send(msg) {
    if (this._state === States.CLOSED) throw new Error('signaling client is closed');
    if (this._state === States.CONNECTED && this._ws && this._ws.readyState === 1) {
      this._ws.send(JSON.stringify(msg));
      return;
    }
    if (this._queue.length >= this.options.maxQueue) {
      throw new Error(`signaling send queue full (${this.options.maxQueue} messages)`);
    }
    this._queue.push(msg);
  }

  /**
   * Send an SDP offer to peer `to`. The server relays `sdp` unchanged; by convention it
   * is the description object `{type: "offer", sdp: "v=0…"}` (`pc.localDescription.toJSON()`).
   * @param {string} to @param {RTCSessionDescriptionInit|string} sdp
   */
  offer(to, sdp) {
    this.send({ type: 'offer', to, sdp });
  }

  /**
   * Send an SDP answer to peer `to` (`{type: "answer", sdp}` by convention).
   * @param {string} to @param {RTCSessionDescriptionInit|string} sdp
   */
  answer(to, sdp) {
    this.send({ type: 'answer', to, sdp });
  }

  /**
   * Send an ICE candidate (an `RTCIceCandidateInit`, or null for end-of-candidates).
   * @param {string} to @param {object|null} candidate
   */
  candidate(to, candidate) {
    this.send({ type: 'candidate', to, candidate });
  }

  /**
   * Send app data to one peer, or to every other peer of the room when `to` is omitted.
   * @param {any} data @param {string} [to]
   */
  message(data, to) {
    this.send(to === undefined ? { type: 'message', data } : { type: 'message', to, data });
  }

  /**
   * Leave the room for good: sends `leave` when connected, closes the socket, state
   * becomes `closed`. Queued messages are dropped.
   */
  close() {
    if (this._state === States.CLOSED) return;
    const ws = this._ws;
    if (ws && ws.readyState === 1 && this._state === States.CONNECTED) {
      try {
        ws.send(JSON.stringify({ type: 'leave' }));
      } catch {
        // The socket is going away anyway.
      }
    }
    this._queue = [];
    this._teardown(1000, 'leave');
    this.peers.clear();
    this._setState(States.CLOSED);
  }

  // ---- internals ----------------------------------------------------------------

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _setState(state) {
    if (state === this._state) return;
    const previous = this._state;
    this._state = state;
    this._emit('statechange', { state, previous });
  }

  _open(state) {
    this._setState(state);
    let ws;
    try {
      ws = new this._WebSocket(this.url);
    } catch (err) {
      // A malformed URL can never work.
      this._emit('error', { code: 'client-bad-url', message: String(err) });
      this._teardown();
      this._setState(States.CLOSED);
      return;
    }
    this._ws = ws;
    this._lastSeen = Date.now();
    this._timers.connect = setTimeout(() => {
      if (this._ws === ws) this._lost(ws, 'connect timeout');
    }, this.options.connectTimeoutMs);
    ws.onopen = () => {
      if (this._ws !== ws) return;
      const join = { type: 'join' };
      if (this.peerId) join.peer = this.peerId;
      if (this.options.token) join.token = this.options.token;
      if (this.options.meta !== undefined) join.meta = this.options.meta;
      if (this.session) {
        join.resume = this.session;
        this._resumeTried = true;
      }
      ws.send(JSON.stringify(join));
    };
    ws.onmessage = (ev) => {
      if (this._ws !== ws) return;
      this._lastSeen = Date.now();
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        this._emit('error', { code: 'client-bad-json', message: 'server sent invalid JSON' });
        return;
      }
      if (msg && typeof msg === 'object') this._handle(ws, msg);
    };
    ws.onclose = (ev) => {
      if (this._ws !== ws) return;
      if (FATAL_CLOSE_CODES.includes(ev.code)) {
        // The server rejected us (unauthorized, protocol violation, ...): retrying
        // would be rejected again.
        this._emit('error', { code: 'client-rejected', message: `closed by server: ${ev.code} ${ev.reason}` });
        this._teardown();
        this.peers.clear();
        this._setState(States.CLOSED);
        return;
      }
      this._lost(ws, `socket closed (${ev.code}${ev.reason ? ' ' + ev.reason : ''})`);
    };
    ws.onerror = () => {
      // Always followed by `close`, which decides what to do.
    };
  }

  _handle(ws, msg) {
    const type = msg.type;
    if (type === 'welcome') {
      clearTimeout(this._timers.connect);
      const resumed = typeof msg.resumed === 'boolean' ? msg.resumed : this._resumeTried && this.peerId === msg.peer;
      this._resumeTried = false;
      this._attempt = 0;
      this.peerId = msg.peer;
      this.session = msg.session;
      this.iceServers = Array.isArray(msg.ice_servers) ? msg.ice_servers : [];
      if (msg.heartbeat_ms > 0) this._heartbeatMs = msg.heartbeat_ms;
      this.peers.clear();
      for (const p of msg.peers || []) this.peers.set(p.peer, { reconnecting: false, ...p });
      this._startHeartbeat(ws);
      this._setState(States.CONNECTED);
      this._emit('welcome', { ...msg, resumed });
      this._flush(ws);
      return;
    }
    if (type === 'error' && this._state !== States.CONNECTED && this._resumeTried) {
      // The server refused our resume (session expired or unknown): join afresh on a
      // new socket, keeping the peer id only if the app chose it.
      this._resumeTried = false;
      this.session = null;
      if (!this.options.peer) this.peerId = null;
      this._emit('error', msg);
      this._teardown();
      this._open(States.RECONNECTING);
      return;
    }
    if (type === 'peer-joined') {
      this.peers.set(msg.peer, { peer: msg.peer, meta: msg.meta, polite: msg.polite, reconnecting: false });
    } else if (type === 'peer-left') {
      this.peers.delete(msg.peer);
    } else if (type === 'peer-reconnecting' || type === 'peer-resumed') {
      const p = this.peers.get(msg.peer);
      if (p) p.reconnecting = type === 'peer-reconnecting';
    } else if (type === 'ping') {
      // A server-side JSON ping: answer it.
      ws.send(JSON.stringify({ type: 'pong' }));
      return;
    }
    if (KNOWN_TYPES.has(type)) {
      // Any message from a peer that was reconnecting means it is back.
      const from = msg.from && this.peers.get(msg.from);
      if (from) from.reconnecting = false;
      this._emit(type, msg);
    } else {
      this._emit('unknown', msg);
    }
  }

  _flush(ws) {
    while (this._queue.length > 0 && this._ws === ws && ws.readyState === 1) {
      ws.send(JSON.stringify(this._queue.shift()));
    }
  }

  _startHeartbeat(ws) {
    clearInterval(this._timers.ping);
    clearInterval(this._timers.watchdog);
    const every = this._heartbeatMs;
    this._timers.ping = setInterval(() => {
      if (this._ws === ws && ws.readyState === 1) ws.send(JSON.stringify({ type: 'ping' }));
    }, every);
    const deadAfter = every * this.options.pingTimeoutFactor;
    this._timers.watchdog = setInterval(() => {
      if (this._ws === ws && Date.now() - this._lastSeen > deadAfter) {
        this._lost(ws, 'no message from server for ' + Math.round(deadAfter) + ' ms');
      }
    }, Math.min(every, 1000));
  }

  /** The socket is gone (or declared dead): schedule a reconnect or give up. */
  _lost(ws, why) {
    if (this._ws !== ws) return;
    this._teardown(4000, why);
    if (!this.options.reconnect) {
      this.peers.clear();
      this._setState(States.CLOSED);
      return;
    }
    const delay = backoffDelay(this._attempt, this.options);
    this._attempt += 1;
    this._setState(States.RECONNECTING);
    this._emit('reconnect-scheduled', { delay, attempt: this._attempt, reason: why });
    this._timers.reconnect = setTimeout(() => {
      if (this._state === States.RECONNECTING && this._ws === null) this._open(States.RECONNECTING);
    }, delay);
  }

  /** Forget the current socket and every timer. */
  _teardown(code = 1000, reason = '') {
    for (const t of Object.values(this._timers)) {
      clearTimeout(t);
      clearInterval(t);
    }
    const ws = this._ws;
    this._ws = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try {
        // Only 1000 and 3000-4999 are allowed from a client.
        ws.close(code === 1000 || (code >= 3000 && code <= 4999) ? code : 1000, reason.slice(0, 120));
      } catch {
        // Already closed.
      }
    }
  }
}
