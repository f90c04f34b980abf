// The call page: /call.html?room=ROOM[&name=NAME] — a mesh video call.
//
// One RTCPeerConnection per other peer. The newcomer (who finds the peer in its
// `welcome`) adds its tracks at once and sends the first offer; the peer already in the
// room (told by `peer-joined`) adds its tracks when that offer arrives, so the first
// negotiation has a single offerer. Any later negotiation (ICE restart, a side that
// reconnected and started over) may still see both sides offer at once ("glare"): the
// "perfect negotiation" pattern resolves it with the `polite` flag the server gives
// for every pair (the polite side rolls back its own offer, the impolite side ignores
// the other's). ICE candidates that arrive before the remote description is set are
// queued and added right after it is.
//
// Why not let both sides offer at once from the start and rely on perfect negotiation
// alone: in Chromium, a polite side whose own setLocalDescription() is still running
// when the other's offer arrives sometimes answers but never gathers ICE candidates for
// that connection (seen in this repo's browser tests, ~1 run in 3 with three peers).
import { el, signalUrl, copyText } from './common.js';
import { SignalingClient } from './signaling.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const room = (params.get('room') || '').trim();
const myName = (params.get('name') || '').trim() || `guest-${Math.random().toString(36).slice(2, 6)}`;
/** `&debug=1` logs the negotiation to the console. */
const debug = params.has('debug') ? (...args) => console.log('[call]', ...args) : () => {};

/** @type {SignalingClient|null} */
let client = null;
/** @type {MediaStream|null} */
let localStream = null;
/** peer id → PeerLink */
const links = new Map();
let soundBlocked = false;

function notice(text, kind = '') {
  const n = $('notice');
  n.hidden = !text;
  n.className = `notice ${kind}`;
  n.textContent = text || '';
}

/** Everything about one remote peer: its connection, its tile, its negotiation state. */
class PeerLink {
  /**
   * @param {string} peer @param {boolean} polite @param {object} meta
   * @param {boolean} initiator add tracks now and offer first (we are the newcomer)
   */
  constructor(peer, polite, meta, initiator) {
    this.peer = peer;
    this.tracksAdded = false;
    this.polite = !!polite;
    this.meta = meta || {};
    this.reconnecting = false;
    // Perfect-negotiation state.
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.settingRemoteAnswer = false;
    /** Candidates received before the remote description was set. */
    this.pendingCandidates = [];
    /** Signaling messages are handled one after another, in arrival order. */
    this.chain = Promise.resolve();

    this.video = el('video', { autoplay: true, playsinline: true, dataset: { peer } });
    this.label = el('span', { class: 'name' }, this.displayName());
    this.tile = el('div', { class: 'tile', dataset: { peer } }, this.video, this.label);
    $('tiles').append(this.tile);

    const pc = new RTCPeerConnection({ iceServers: client.iceServers });
    this.pc = pc;
    if (initiator) this.addTracks();
    pc.ontrack = ({ track, streams }) => {
      const stream = streams[0] || this.video.srcObject || new MediaStream();
      if (!streams[0]) stream.addTrack(track);
      if (this.video.srcObject !== stream) this.video.srcObject = stream;
      this.play();
    };
    pc.onicecandidate = ({ candidate }) => {
      if (candidate && client) {
        debug('send candidate to', peer, candidate.type, candidate.address, candidate.usernameFragment);
        client.candidate(peer, candidate.toJSON());
      }
    };
    pc.onnegotiationneeded = async () => {
      try {
        this.makingOffer = true;
        await pc.setLocalDescription();
        debug('send offer to', peer, 'signalingState', pc.signalingState);
        client.offer(peer, pc.localDescription.toJSON());
      } catch (err) {
        console.warn('offer to', peer, 'failed:', err);
      } finally {
        this.makingOffer = false;
      }
    };
    pc.onconnectionstatechange = () => {
      debug('connection to', peer, pc.connectionState);
      if (pc.connectionState === 'failed') pc.restartIce();
      renderPeers();
    };
  }

  /** Send our camera/mic (or, without them, ask to receive). Once per connection. */
  addTracks() {
    if (this.tracksAdded) return;
    this.tracksAdded = true;
    if (localStream) {
      for (const track of localStream.getTracks()) this.pc.addTrack(track, localStream);
    } else if (this.pc.getTransceivers().length === 0) {
      // No camera/mic here: still receive the other side's media.
      this.pc.addTransceiver('audio', { direction: 'recvonly' });
      this.pc.addTransceiver('video', { direction: 'recvonly' });
    }
  }

  displayName() {
    return (this.meta && this.meta.name) || this.peer;
  }

  play() {
    this.video.muted = soundBlocked;
    this.video.play().catch((err) => {
      if (err && err.name === 'NotAllowedError' && !this.video.muted) {
        // Autoplay with sound needs a user gesture: play muted, offer a button.
        soundBlocked = true;
        $('sound').hidden = false;
        this.video.muted = true;
        this.video.play().catch(() => {});
      }
    });
  }

  /** Queue a signaling message from this peer for in-order handling. */
  handle(msg) {
    this.chain = this.chain.then(() => this._handle(msg)).catch((err) => {
      console.warn('signaling from', this.peer, 'failed:', err);
    });
  }

  async _handle(msg) {
    const pc = this.pc;
    debug('handle', msg.type, 'from', this.peer, 'signalingState', pc.signalingState, 'makingOffer', this.makingOffer);
    if (msg.type === 'offer' || msg.type === 'answer') {
      // `sdp` is a description `{type, sdp}` (what this page sends) or a bare SDP string.
      const description = typeof msg.sdp === 'string' ? { type: msg.type, sdp: msg.sdp } : msg.sdp;
      if (!description || description.type !== msg.type || typeof description.sdp !== 'string') {
        throw new Error(`malformed ${msg.type}`);
      }
      const readyForOffer = !this.makingOffer && (pc.signalingState === 'stable' || this.settingRemoteAnswer);
      const collision = msg.type === 'offer' && !readyForOffer;
      this.ignoreOffer = !this.polite && collision;
      if (this.ignoreOffer) {
        debug('ignore colliding offer from', this.peer);
        return; // impolite side: our own offer wins
      }
      this.settingRemoteAnswer = msg.type === 'answer';
      await pc.setRemoteDescription(description); // polite side: rolls back our offer
      this.settingRemoteAnswer = false;
      await this.flushCandidates();
      if (msg.type === 'offer') {
        // Adding tracks now reuses the offer's transceivers: the answer carries them
        // and no second negotiation is needed.
        this.addTracks();
        await pc.setLocalDescription();
        debug('send answer to', this.peer);
        client.answer(this.peer, pc.localDescription.toJSON());
      }
    } else if (msg.type === 'candidate') {
      if (!msg.candidate) return;
      if (!pc.remoteDescription) {
        debug('queue candidate from', this.peer);
        this.pendingCandidates.push(msg.candidate);
        return;
      }
      await this.addCandidate(msg.candidate);
    }
  }

  async flushCandidates() {
    const queued = this.pendingCandidates.splice(0);
    for (const c of queued) await this.addCandidate(c);
  }

  async addCandidate(c) {
    try {
      await this.pc.addIceCandidate(c);
      debug('added candidate from', this.peer, c.usernameFragment);
    } catch (err) {
      debug('candidate from', this.peer, c.usernameFragment, 'rejected:', String(err));
      // Candidates of an offer we ignored cannot be added; that is expected.
      if (!this.ignoreOffer) console.warn('candidate from', this.peer, 'rejected:', err);
    }
  }

  /** Numbers for the tests and the peer list. */
  async stats() {
    let framesDecoded = 0;
    let bytesReceived = 0;
    try {
      const report = await this.pc.getStats();
      report.forEach((s) => {
        if (s.type === 'inbound-rtp' && s.kind === 'video') {
          framesDecoded += s.framesDecoded || 0;
          bytesReceived += s.bytesReceived || 0;
        }
      });
    } catch {
      // A closed connection has no stats.
    }
    const q = this.video.getVideoPlaybackQuality();
    return {
      peer: this.peer,
      name: this.displayName(),
      polite: this.polite,
      connectionState: this.pc.connectionState,
      framesDecoded,
      bytesReceived,
      videoFrames: q.totalVideoFrames,
      videoWidth: this.video.videoWidth,
      videoHeight: this.video.videoHeight,
    };
  }

  close() {
    this.pc.ontrack = this.pc.onicecandidate = this.pc.onnegotiationneeded = this.pc.onconnectionstatechange = null;
    this.pc.close();
    this.video.srcObject = null;
    this.tile.remove();
  }
}

function ensureLink(peer, polite, meta, initiator) {
  let link = links.get(peer);
  if (!link) {
    link = new PeerLink(peer, polite, meta, initiator);
    links.set(peer, link);
  }
  return link;
}

function dropLink(peer) {
  const link = links.get(peer);
  if (!link) return;
  links.delete(peer);
  link.close();
}

function renderPeers() {
  const items = [...links.values()].map((l) => {
    const state = l.reconnecting ? 'reconnecting' : l.pc.connectionState;
    const cls = state === 'connected' ? 'ok' : state === 'failed' || state === 'reconnecting' ? 'bad' : 'warn';
    return el('li', { dataset: { peer: l.peer } },
      el('span', {}, l.displayName(), l.displayName() !== l.peer ? el('span', { class: 'muted small' }, ` (${l.peer})`) : null),
      el('span', { class: `badge ${cls}` }, state));
  });
  $('peers').replaceChildren(...items);
  $('alone').hidden = items.length > 0;
}

function addLocalTile() {
  const video = el('video', { autoplay: true, playsinline: true, muted: true, id: 'local-video' });
  video.muted = true;
  video.style.transform = 'scaleX(-1)';
  video.srcObject = localStream;
  video.play().catch(() => {});
  $('tiles').prepend(el('div', { class: 'tile', id: 'local-tile' }, video, el('span', { class: 'name' }, `${myName} (you)`)));
}

async function getMedia() {
  try {
    localStream = await navigator.mediaDevices.getUserMedia({
      audio: true,
      video: { width: { ideal: 640 }, height: { ideal: 480 } },
    });
  } catch (err) {
    notice(`No camera/microphone (${err.name}): you can watch and listen, others cannot see you.`);
    localStream = null;
  }
}

function wireControls() {
  const toggle = (button, kind, onText, offText) => {
    button.addEventListener('click', () => {
      if (!localStream) return;
      const off = button.getAttribute('aria-pressed') !== 'true';
      for (const t of localStream.getTracks()) if (t.kind === kind) t.enabled = !off;
      button.setAttribute('aria-pressed', String(off));
      button.textContent = off ? offText : onText;
    });
  };
  toggle($('mute'), 'audio', 'Mute', 'Unmute');
  toggle($('camera'), 'video', 'Camera off', 'Camera on');
  $('leave').addEventListener('click', leave);
  $('rejoin').addEventListener('click', () => location.reload());
  $('share').value = location.href;
  $('share-copy').addEventListener('click', () => copyText(location.href, $('share')));
  const sound = el('button', { type: 'button', id: 'sound', hidden: true }, 'Enable sound');
  sound.addEventListener('click', () => {
    soundBlocked = false;
    sound.hidden = true;
    for (const l of links.values()) l.play();
  });
  $('leave').after(sound);
}

function leave() {
  if (client) client.close();
  for (const peer of [...links.keys()]) dropLink(peer);
  if (localStream) for (const t of localStream.getTracks()) t.stop();
  const local = $('local-tile');
  if (local) local.remove();
  renderPeers();
  for (const id of ['mute', 'camera', 'leave']) $(id).disabled = true;
  $('rejoin').hidden = false;
  notice('You left the call.');
}

function connect() {
  client = new SignalingClient(signalUrl(room), { meta: { name: myName } });
  client.on('statechange', ({ state }) => {
    const b = $('sig-state');
    b.textContent = state;
    b.className = `badge ${state === 'connected' ? 'ok' : state === 'closed' ? 'bad' : 'warn'}`;
  });
  client.on('welcome', (w) => {
    $('me').textContent = `${myName} (${w.peer})`;
    const roster = new Map((w.peers || []).map((p) => [p.peer, p]));
    if (!w.resumed) {
      // A fresh session: the others know us under a new id, start every link anew.
      for (const peer of [...links.keys()]) dropLink(peer);
    }
    for (const peer of [...links.keys()]) if (!roster.has(peer)) dropLink(peer);
    for (const p of roster.values()) {
      const link = ensureLink(p.peer, p.polite, p.meta, true);
      link.reconnecting = !!p.reconnecting;
    }
    renderPeers();
  });
  client.on('peer-joined', (p) => {
    dropLink(p.peer); // same id again: an old connection is stale
    ensureLink(p.peer, p.polite, p.meta, false);
    renderPeers();
  });
  client.on('peer-left', (p) => {
    dropLink(p.peer);
    renderPeers();
  });
  for (const type of ['peer-reconnecting', 'peer-resumed']) {
    client.on(type, (p) => {
      const link = links.get(p.peer);
      if (link) {
        link.reconnecting = type === 'peer-reconnecting';
        // Back after a drop: if the media path broke meanwhile, renegotiate ICE.
        if (type === 'peer-resumed' && ['failed', 'disconnected'].includes(link.pc.connectionState)) link.pc.restartIce();
      }
      renderPeers();
    });
  }
  for (const type of ['offer', 'answer', 'candidate']) {
    client.on(type, (msg) => {
      const known = client.peers.get(msg.from);
      const link = links.get(msg.from) || (known ? ensureLink(msg.from, known.polite, known.meta, false) : null);
      if (!link) return;
      if (link.reconnecting) {
        link.reconnecting = false;
        renderPeers();
      }
      link.handle(msg);
    });
  }
  client.on('error', (e) => {
    console.warn('signaling error', e);
    if (e.code && !String(e.code).startsWith('client-')) notice(`Signaling error: ${e.code} — ${e.message || ''}`, 'error');
    else if (client.state === 'closed') notice(`Signaling closed: ${e.message}`, 'error');
  });
  client.connect();
}

async function main() {
  if (!room) {
    $('pick').hidden = false;
    return;
  }
  document.title = `${room} · call · wsrelay`;
  $('title').textContent = `Room ${room}`;
  $('call').hidden = false;
  wireControls();
  renderPeers();
  await getMedia();
  if (localStream) addLocalTile();
  connect();
  window.addEventListener('pagehide', () => {
    if (client) client.close();
  });
}

/** For tests and the console. */
window.wsrelayCall = {
  get client() { return client; },
  links,
  /** Per-peer numbers: frames decoded, connection state, video size. */
  stats: () => Promise.all([...links.values()].map((l) => l.stats())),
  leave,
};

main().catch((err) => notice(`Call failed: ${err && err.message ? err.message : err}`, 'error'));
