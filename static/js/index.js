// The index page: live streams from /api/streams, publish URLs, call-room form.
import { el, liveUrls, copyRow, formatDuration, formatBitrate, desktopPlayCommands, DEFAULT_RTMP_PORT } from './common.js';
import { audioWords, playability, videoWords } from './codecs.js';

const REFRESH_MS = 2000;
let rtmpPort = DEFAULT_RTMP_PORT;

const $ = (id) => document.getElementById(id);
$('refresh-s').textContent = String(REFRESH_MS / 1000);

/**
 * The play cell: Play (mpegts.js) and flv.js buttons for what this browser can play;
 * for what it can't, the reason in words and a link to the player page's explanation.
 */
function playCell(s, play) {
  const mpegts = playability(s, 'mpegts');
  const flvjs = playability(s, 'flvjs');
  if (!mpegts.playable && !flvjs.playable) {
    return el('td', { class: 'cant-play' },
      el('span', { class: 'badge bad', title: mpegts.message }, "Can't play here"), ' ',
      el('a', { href: play, class: 'small' }, 'why?'),
      el('div', { class: 'small muted' }, mpegts.message));
  }
  const remark = [mpegts.playable ? mpegts.message : flvjs.message, mpegts.caveat].filter(Boolean).join(' ');
  return el('td', {},
    mpegts.playable ? el('a', { class: 'button primary', href: play, title: remark || 'Play with mpegts.js' }, 'Play') : null, ' ',
    flvjs.playable ? el('a', { class: mpegts.playable ? 'button' : 'button primary', href: `${play}&lib=flvjs`, title: 'Play with flv.js instead of mpegts.js' }, 'flv.js') : null,
    remark ? el('div', { class: 'small muted' }, remark) : null);
}

function stateBadge(state) {
  const cls = state === 'live' ? 'ok' : state === 'reconnecting' || state === 'grace' ? 'warn' : '';
  return el('span', { class: `badge ${cls}` }, state || 'unknown');
}

/** name → {main, urls, key}: rows are kept between refreshes so open panels stay open. */
const rows = new Map();

function statCells(s, play) {
  return [
    el('td', {}, el('a', { href: play }, el('strong', {}, s.name)), ' ', stateBadge(s.state)),
    el('td', {}, videoWords(s.video) || '–'),
    el('td', {}, audioWords(s.audio) || '–'),
    el('td', { class: 'num' }, formatBitrate(s.bitrate_kbps)),
    el('td', { class: 'num' }, String(s.players ?? '–')),
    el('td', { class: 'num' }, formatDuration(s.uptime_s)),
    playCell(s, play),
  ];
}

function streamRows(s) {
  const play = `/player.html?stream=${encodeURIComponent(s.name)}`;
  let r = rows.get(s.name);
  const key = String(rtmpPort);
  if (!r || r.key !== key) {
    const u = liveUrls(s.name, rtmpPort);
    r = {
      key,
      main: el('tr', { dataset: { stream: s.name } }),
      urls: el('tr', { class: 'urls' }, el('td', { colspan: 7 },
        el('details', { class: 'urls' }, el('summary', {}, 'URLs to play and publish'),
          copyRow('WS-FLV', u.ws),
          copyRow('HTTP-FLV', u.http),
          copyRow('ffplay', desktopPlayCommands(s.name).ffplay),
          u.rtmp ? copyRow('RTMP', u.rtmp) : null))),
    };
    rows.set(s.name, r);
  }
  r.main.replaceChildren(...statCells(s, play));
  r.main.dataset.playable = playability(s, 'mpegts').playable || playability(s, 'flvjs').playable ? 'yes' : 'no';
  return [r.main, r.urls];
}

async function refreshStreams() {
  try {
    const res = await fetch('/api/streams', { cache: 'no-store' });
    if (!res.ok) throw new Error(`/api/streams answered ${res.status}`);
    const data = await res.json();
    // The server may tell its RTMP port (null when RTMP is off).
    if (data.rtmp_port !== undefined) rtmpPort = data.rtmp_port;
    const streams = Array.isArray(data.streams) ? data.streams : [];
    streams.sort((a, b) => String(a.name).localeCompare(String(b.name)));
    const live = new Set(streams.map((s) => s.name));
    for (const name of [...rows.keys()]) if (!live.has(name)) rows.delete(name);
    const body = $('streams');
    const wanted = streams.flatMap(streamRows);
    // Re-append only when the list of rows changed, so focus and open panels survive.
    if (wanted.length !== body.children.length || wanted.some((row, i) => body.children[i] !== row)) {
      body.replaceChildren(...wanted);
    }
    $('no-streams').hidden = streams.length > 0;
    $('api-error').hidden = true;
    $('updated').textContent = `updated ${new Date().toLocaleTimeString()}`;
    if (publishPort !== rtmpPort) renderPublish();
  } catch (err) {
    $('api-error').hidden = false;
    $('api-error').textContent = `Cannot load the stream list: ${err.message}. Retrying…`;
  }
}

async function refreshRooms() {
  try {
    const res = await fetch('/api/rooms', { cache: 'no-store' });
    if (!res.ok) return;
    const data = await res.json();
    const rooms = Array.isArray(data) ? data : Array.isArray(data.rooms) ? data.rooms : [];
    const links = rooms.map((r) => {
      const name = r.name ?? r.room;
      const peers = r.peers ?? r.peer_count ?? r.count;
      return el('a', { href: `/call.html?room=${encodeURIComponent(name)}` },
        `${name}${peers !== undefined ? ` (${peers})` : ''}`);
    });
    const box = $('rooms');
    if (links.length === 0) box.replaceChildren('none');
    else box.replaceChildren(...links.flatMap((a, i) => (i ? [', ', a] : [a])));
  } catch {
    // Rooms are a nicety on this page; the form works without them.
  }
}

let publishPort;

function renderPublish() {
  publishPort = rtmpPort;
  const name = $('publish-name').value.trim() || 'cam1';
  const u = liveUrls(name, rtmpPort);
  $('publish-urls').replaceChildren(...[
    copyRow('HTTP POST', u.http),
    u.rtmp ? copyRow('RTMP', u.rtmp) : null,
    copyRow('Play', `${location.origin}/player.html?stream=${encodeURIComponent(name)}`)].filter(Boolean));
  $('ffmpeg-cmd').textContent =
    `ffmpeg -re -i input.mp4 -c copy -f flv -method POST ${u.http}` +
    (u.rtmp ? `\n# or over RTMP (OBS: server rtmp://${location.hostname}:${rtmpPort}/live, key ${name})\n` +
      `ffmpeg -re -i input.mp4 -c copy -f flv ${u.rtmp}` : '');
}

$('publish-name').addEventListener('input', renderPublish);
renderPublish();
refreshStreams();
refreshRooms();
setInterval(refreshStreams, REFRESH_MS);
setInterval(refreshRooms, REFRESH_MS * 2);
