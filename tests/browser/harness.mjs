// Shared harness of the browser tests: starts the real wsrelay binary, publishes with
// real ffmpeg, drives the system Chromium through playwright-core.
//
// Every missing tool is a loud failure (never a skip): the test command installs them
//   apt-get install -y chromium ffmpeg
//   npm ci --prefix tests/browser
//   cargo build
//
// The server serves the pages built into the binary, as users get them (rebuild after
// editing static/), unless WSRELAY_STATIC_DIR names a directory to serve instead (e.g.
// static/, to iterate on the pages without rebuilding).
//
// Environment: WSRELAY_BIN (default target/debug/wsrelay), CHROMIUM (default
// /usr/bin/chromium), FFMPEG (default ffmpeg from PATH), WSRELAY_STATIC_DIR (default:
// the embedded pages), WSRELAY_TEST_LOG=1 to echo the server's and ffmpeg's output.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const STATIC_DIR = path.join(ROOT, 'static');
export const TARGET_DIR = path.join(ROOT, 'target');
const BIN = path.resolve(ROOT, process.env.WSRELAY_BIN || 'target/debug/wsrelay');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const FFMPEG = process.env.FFMPEG || 'ffmpeg';
const ECHO = process.env.WSRELAY_TEST_LOG === '1';

/** The flags that work for headless Chromium on this kind of machine (issue 6). */
export const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--allow-loopback-in-peer-connection',
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
];

const INSTALL_HINT =
  'install with: apt-get install -y chromium ffmpeg && npm ci --prefix tests/browser && cargo build';

/** Throw (fail the test) unless every tool the browser tests need is here. */
export function requireTools() {
  const missing = [];
  if (!existsSync(BIN)) missing.push(`wsrelay binary ${BIN} (cargo build, or set WSRELAY_BIN)`);
  if (!existsSync(CHROMIUM)) missing.push(`chromium at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM)`);
  const ff = spawnSync(FFMPEG, ['-hide_banner', '-version'], { encoding: 'utf8' });
  if (ff.error || ff.status !== 0) missing.push(`ffmpeg (${FFMPEG}) (apt-get install ffmpeg)`);
  if (!existsSync(path.join(ROOT, 'tests', 'browser', 'node_modules', 'playwright-core', 'package.json'))) {
    missing.push('tests/browser/node_modules/playwright-core (npm ci --prefix tests/browser)');
  }
  if (missing.length > 0) {
    throw new Error(`browser tests cannot run, missing:\n  - ${missing.join('\n  - ')}\n${INSTALL_HINT}`);
  }
}

/** Keep the last `max` lines of a process's output for failure messages. */
class Tail {
  constructor(prefix, max = 200) {
    this.prefix = prefix;
    this.max = max;
    this.lines = [];
    this.partial = '';
  }

  push(chunk) {
    // eslint-disable-next-line no-control-regex
    const text = (this.partial + chunk.toString()).replace(/\x1b\[[0-9;]*m/g, '');
    const lines = text.split('\n');
    this.partial = lines.pop();
    for (const line of lines) {
      if (ECHO) process.stderr.write(`[${this.prefix}] ${line}\n`);
      this.lines.push(line);
      if (this.lines.length > this.max) this.lines.shift();
    }
    return lines;
  }

  toString() {
    return this.lines.map((l) => `[${this.prefix}] ${l}`).join('\n');
  }
}

/**
 * Start wsrelay on free ports, serving its built-in pages (or WSRELAY_STATIC_DIR).
 * @param {string[]} [extraArgs]
 * @returns {Promise<{http: string, ws: string, rtmp: string|null, proc: import('node:child_process').ChildProcess, log: Tail, stop: () => Promise<void>}>}
 */
export async function startServer(extraArgs = []) {
  const args = ['--http', '127.0.0.1:0', ...extraArgs];
  if (!extraArgs.includes('--static-dir') && process.env.WSRELAY_STATIC_DIR) {
    args.push('--static-dir', path.resolve(ROOT, process.env.WSRELAY_STATIC_DIR));
  }
  if (!extraArgs.includes('--rtmp')) args.push('--rtmp', 'off');
  const proc = spawn(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { RUST_LOG: 'info', ...process.env, NO_COLOR: '1' } });
  const log = new Tail('wsrelay');
  const found = {};
  const ready = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`wsrelay printed no "listening http://" line within 20 s:\n${log}`)), 20000);
    proc.stdout.on('data', (chunk) => {
      for (const line of log.push(chunk)) {
        const m = /listening (http|rtmp):\/\/(\S+)/.exec(line);
        if (m) found[m[1]] = m[2];
        if (found.http) {
          clearTimeout(timer);
          resolve();
        }
      }
    });
    proc.stderr.on('data', (chunk) => log.push(chunk));
    proc.on('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`wsrelay exited early (code ${code}, signal ${signal}):\n${log}`));
    });
  });
  await ready;
  // Give a possible second listener line (rtmp) a moment to arrive.
  await sleep(50);
  return {
    http: `http://${found.http}`,
    ws: `ws://${found.http}`,
    rtmp: found.rtmp ? `rtmp://${found.rtmp}` : null,
    proc,
    log,
    stop: () => stopProcess(proc, 'SIGTERM', 5000),
  };
}

/** Signal a process and wait for it to exit; SIGKILL after `graceMs`. */
export async function stopProcess(proc, signal = 'SIGTERM', graceMs = 5000) {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise((resolve) => proc.once('exit', resolve));
  proc.kill(signal);
  const timer = setTimeout(() => proc.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

/**
 * The path of a current ffmpeg (9.x: Enhanced FLV with HEVC, AV1, VP9, Opus) from
 * scripts/ffmpeg9.sh (a pinned PyPI imageio-ffmpeg in a venv under target/), installing
 * it on first use. Throws (fails the test) when it can't.
 */
export function ffmpeg9() {
  const r = spawnSync(path.join(ROOT, 'scripts', 'ffmpeg9.sh'), [], { encoding: 'utf8', timeout: 300000 });
  const exe = (r.stdout || '').trim();
  if (r.status !== 0 || !exe) {
    throw new Error(`scripts/ffmpeg9.sh could not provide ffmpeg 9 (status ${r.status}):\n${r.stderr || r.error}`);
  }
  return exe;
}

/**
 * Publish a live test stream (testsrc2 + a sine tone, 25 fps, one keyframe per second;
 * H.264 + AAC unless `video`/`audio` say otherwise) to `http://.../live/NAME.flv` with
 * HTTP POST, in real time.
 * @param {string} httpBase e.g. http://127.0.0.1:1234
 * @param {string} name stream name
 * @param {{size?: string, ffmpeg?: string, video?: string[], audio?: string[], sampleRate?: number}} [opts]
 *   `ffmpeg`: another binary (e.g. ffmpeg9()); `video`/`audio`: encoder arguments.
 */
export function publish(httpBase, name, opts = {}) {
  const size = opts.size || '640x360';
  const url = `${httpBase}/live/${name}.flv`;
  const video = opts.video || [
    '-c:v', 'libx264', '-preset', 'ultrafast', '-tune', 'zerolatency', '-pix_fmt', 'yuv420p',
    '-g', '25', '-keyint_min', '25', '-b:v', '800k',
  ];
  const audio = opts.audio || ['-c:a', 'aac', '-b:a', '64k', '-ac', '2'];
  const args = [
    '-hide_banner', '-loglevel', 'warning', '-nostdin',
    '-re',
    '-f', 'lavfi', '-i', `testsrc2=size=${size}:rate=25`,
    '-f', 'lavfi', '-i', `sine=frequency=440:sample_rate=${opts.sampleRate || 44100}`,
    ...video,
    ...audio,
    '-f', 'flv', '-method', 'POST', url,
  ];
  const proc = spawn(opts.ffmpeg || FFMPEG, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const log = new Tail(`ffmpeg ${name}`);
  proc.stderr.on('data', (chunk) => log.push(chunk));
  return {
    proc,
    log,
    /** SIGKILL: the publisher vanishes like a crashed encoder or a lost network. */
    kill: () => stopProcess(proc, 'SIGKILL', 1000),
    stop: () => stopProcess(proc, 'SIGINT', 3000),
  };
}

/** Poll `fn` until it returns a truthy value; fail with `what` after `timeoutMs`. */
export async function waitFor(fn, timeoutMs, what, intervalMs = 100) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      const seen = last instanceof Error ? last.message : JSON.stringify(last);
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${seen})`);
    }
    await sleep(intervalMs);
  }
}

/** GET /api/streams and return the named stream's entry, or undefined. */
export async function apiStream(httpBase, name) {
  const res = await fetch(`${httpBase}/api/streams`);
  if (!res.ok) throw new Error(`/api/streams answered ${res.status}`);
  const data = await res.json();
  return (data.streams || []).find((s) => s.name === name);
}

/** Launch the system Chromium headless with the flags. */
export async function launchBrowser() {
  const { chromium } = await import('playwright-core');
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_FLAGS });
}

/**
 * Open `url` in a new page of `context`, recording console messages and page errors
 * (returned as `logs`, for failure messages).
 */
export async function openPage(context, url, name = 'page') {
  const page = await context.newPage();
  const logs = [];
  page.on('console', (m) => {
    const line = `[${name} console.${m.type()}] ${m.text()}`;
    logs.push(line);
    if (ECHO) process.stderr.write(line + '\n');
  });
  page.on('pageerror', (e) => logs.push(`[${name} pageerror] ${e.message}`));
  await page.goto(url);
  return { page, logs };
}

/** Write a screenshot to target/browser-NAME.png and return its path. */
export async function screenshot(page, name) {
  mkdirSync(TARGET_DIR, { recursive: true });
  const file = path.join(TARGET_DIR, `browser-${name}.png`);
  await page.screenshot({ path: file });
  return file;
}

/**
 * A TCP proxy in front of the server, to cut connections the way a network does:
 * `drop()` resets every open connection (both directions, no close frame), `pause()`
 * makes new connections fail at once, `resume()` lets them through again, `retarget()`
 * points new connections at another server.
 * @param {string} target "host:port" of the server
 */
export async function startProxy(target) {
  const split = (t) => [t.slice(0, t.lastIndexOf(':')), Number(t.slice(t.lastIndexOf(':') + 1))];
  let [host, port] = split(target);
  const open = new Set();
  let paused = false;
  const server = net.createServer((client) => {
    if (paused) {
      client.resetAndDestroy();
      return;
    }
    const upstream = net.connect(port, host);
    const pair = { client, upstream };
    open.add(pair);
    const end = () => {
      open.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const addr = `127.0.0.1:${server.address().port}`;
  return {
    http: `http://${addr}`,
    ws: `ws://${addr}`,
    get connections() {
      return open.size;
    },
    drop() {
      for (const { client, upstream } of open) {
        client.resetAndDestroy();
        upstream.resetAndDestroy();
      }
      open.clear();
    },
    pause() {
      paused = true;
    },
    resume() {
      paused = false;
    },
    /** Send new connections to another server ("host:port"), e.g. a restarted one. */
    retarget(newTarget) {
      [host, port] = split(newTarget);
    },
    close() {
      this.drop();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}
