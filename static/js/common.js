// Small helpers shared by wsrelay's pages. ES module, no dependencies.

/**
 * Create an element: el('a', {href: '/x', class: 'button'}, 'text', childNode).
 * Attributes starting with "on" are event listeners.
 * @param {string} tag
 * @param {Record<string, any>} [attrs]
 * @param {...(Node|string|null|undefined)} children
 * @returns {HTMLElement}
 */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') node.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

/** Default RTMP port the pages assume when the server does not tell another one. */
export const DEFAULT_RTMP_PORT = 1935;

/**
 * The URLs of live stream `name` on the server that served this page.
 * @param {string} name stream name, e.g. "cam1" or "team/cam1"
 * @param {number|null} [rtmpPort] RTMP port, null when RTMP is off
 * @returns {{ws: string, http: string, rtmp: string|null}}
 */
export function liveUrls(name, rtmpPort = DEFAULT_RTMP_PORT) {
  const secure = location.protocol === 'https:';
  const path = `/live/${name}.flv`;
  return {
    ws: `${secure ? 'wss' : 'ws'}://${location.host}${path}`,
    http: `${location.protocol}//${location.host}${path}`,
    rtmp: rtmpPort ? `rtmp://${location.hostname}:${rtmpPort}/live/${name}` : null,
  };
}

/** WebSocket URL of signaling room `room` on this server. @param {string} room */
export function signalUrl(room) {
  const secure = location.protocol === 'https:';
  return `${secure ? 'wss' : 'ws'}://${location.host}/signal/${encodeURIComponent(room)}`;
}

/** Copy text to the clipboard; falls back to a selection copy on insecure origins. */
export async function copyText(text, input) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    if (input) {
      input.select();
      return document.execCommand('copy');
    }
    return false;
  }
}

/**
 * A read-only URL field with a Copy button.
 * @param {string} label @param {string} value
 */
export function copyRow(label, value) {
  const input = el('input', { type: 'text', readonly: true, value, 'aria-label': label });
  const button = el('button', { type: 'button' }, 'Copy');
  button.addEventListener('click', async () => {
    const ok = await copyText(value, input);
    button.textContent = ok ? 'Copied' : 'Select + Ctrl+C';
    setTimeout(() => { button.textContent = 'Copy'; }, 1500);
  });
  return el('div', { class: 'copy-row' }, el('span', { class: 'label' }, label), input, button);
}

/** "1 h 02 m", "3 m 05 s", "12 s". @param {number} s seconds */
export function formatDuration(s) {
  if (!Number.isFinite(s) || s < 0) return '–';
  s = Math.floor(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  if (h > 0) return `${h} h ${String(m).padStart(2, '0')} m`;
  if (m > 0) return `${m} m ${String(sec).padStart(2, '0')} s`;
  return `${sec} s`;
}

/**
 * Show a notice that a player library is missing from `/vendor/...`. The binary has
 * them built in; only a server started with `--static-dir` pointing at a directory
 * without `vendor/` lacks them.
 * @param {HTMLElement} box @param {string} what @param {string} src
 */
export function showMissingVendor(box, what, src) {
  box.hidden = false;
  box.classList.add('error');
  box.replaceChildren(
    el('strong', {}, `${what} is not available on this server`), ` (${src} was not found). `,
    'wsrelay has the player libraries built in; this server was started with ',
    el('code', {}, '--static-dir'), ' pointing at a directory without them. Copy the repository\'s ',
    el('code', {}, 'static/vendor/'), ' there, or start wsrelay without ', el('code', {}, '--static-dir'), '.',
  );
}

/**
 * The commands that play live stream `name` outside the browser.
 * @param {string} name @returns {{ffplay: string, vlc: string}}
 */
export function desktopPlayCommands(name) {
  const { http } = liveUrls(name);
  return { ffplay: `ffplay ${http}`, vlc: `vlc ${http}` };
}

/** "2.3 Mb/s", "850 kb/s". @param {number} kbps */
export function formatBitrate(kbps) {
  if (!Number.isFinite(kbps) || kbps <= 0) return '–';
  return kbps >= 1000 ? `${(kbps / 1000).toFixed(1)} Mb/s` : `${Math.round(kbps)} kb/s`;
}

/**
 * Load a classic script (a UMD library) and resolve when it ran.
 * @param {string} src @returns {Promise<void>}
 */
export function loadScript(src) {
  return new Promise((resolve, reject) => {
    const s = el('script', { src });
    s.onload = () => resolve();
    s.onerror = () => reject(new Error(`could not load ${src}`));
    document.head.append(s);
  });
}
