// The player page: /player.html?stream=NAME[&lib=flvjs]
import { el, liveUrls, loadScript, showMissingVendor, copyText } from './common.js';
import { LivePlayer, LIBRARY_SCRIPTS } from './live-player.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const stream = (params.get('stream') || '').trim();
const lib = params.get('lib') === 'flvjs' ? 'flvjs' : 'mpegts';
const libName = lib === 'flvjs' ? 'flv.js' : 'mpegts.js';

/** For tests and the console: the LivePlayer, or null before it exists. */
window.wsrelayPlayer = null;

const STATE_CLASS = { playing: 'ok', buffering: 'warn', loading: 'warn', retrying: 'bad', error: 'bad' };

function render(s) {
  $('state').textContent = s.state;
  $('state').className = `badge ${STATE_CLASS[s.state] || ''}`;
  $('detail').textContent = s.detail || '–';
  $('resolution').textContent = s.width && s.height ? `${s.width}×${s.height}` : '–';
  $('codecs').textContent = [s.videoCodec, s.audioCodec].filter(Boolean).join(', ') || '–';
  $('fps').textContent = s.fps ? `${Number(s.fps).toFixed(2)} fps` : '–';
  $('buffer').textContent = `${s.bufferS.toFixed(2)} s`;
  $('startup').textContent = s.startupMs === null ? '–' : `${s.startupMs} ms`;
  $('speed').textContent = s.speedKBps ? `${Math.round(s.speedKBps * 8)} kb/s` : '–';
  $('decoded').textContent = String(s.decodedFrames);
  $('dropped').textContent = String(s.droppedFrames);
  $('played').textContent = `${s.playedS.toFixed(1)} s`;
  $('restarts').textContent = String(s.restarts);
}

/** While retrying, tell whether the server lists the stream at all. */
async function explainRetry(player) {
  try {
    const res = await fetch('/api/streams', { cache: 'no-store' });
    if (!res.ok) return;
    const data = await res.json();
    const live = (data.streams || []).some((s) => s.name === stream);
    if (player.state === 'retrying' && !live) {
      $('notice').hidden = false;
      $('notice').classList.remove('error');
      $('notice').textContent = `"${stream}" is not live right now. The page keeps trying and resumes on its own when it is back.`;
    }
  } catch {
    // The notice is a nicety.
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

  try {
    await loadScript(LIBRARY_SCRIPTS[lib]);
  } catch {
    showMissingVendor($('notice'), libName);
    $('state').textContent = 'no library';
    $('state').className = 'badge bad';
    return;
  }

  const video = $('video');
  const player = new LivePlayer(video, urls.ws, { lib });
  window.wsrelayPlayer = player;
  player.addEventListener('stats', (e) => render(e.detail));
  player.addEventListener('state', (e) => {
    render(player.stats());
    if (e.detail.state === 'playing') $('notice').hidden = true;
    if (e.detail.state === 'retrying') explainRetry(player);
    if (e.detail.state === 'error') {
      $('notice').hidden = false;
      $('notice').classList.add('error');
      $('notice').textContent = e.detail.detail;
    }
  });
  $('unmute').addEventListener('click', () => {
    video.muted = !video.muted;
    if (!video.muted) video.play().catch(() => {});
  });
  const showMuted = () => { $('unmute').textContent = video.muted ? 'Unmute' : 'Mute'; };
  video.addEventListener('volumechange', showMuted);
  showMuted();
  $('reconnect').addEventListener('click', () => player.reconnect());
  player.start();
}

main().catch((err) => {
  $('notice').hidden = false;
  $('notice').classList.add('error');
  $('notice').replaceChildren(el('strong', {}, 'Player failed: '), String(err && err.message ? err.message : err));
});
