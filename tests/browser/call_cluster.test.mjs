// The call page across a cluster: a redis-server on a unix socket and three wsrelay
// processes (A, B, C) sharing it. A plain signaling client joins first on A (the room's
// home), then two headless Chromium pages with fake camera and mic join the same room
// on B and on C: every offer, answer and candidate between them crosses two links
// (B → A → C and back), and they see each other's video over WebRTC.
// Run: node --test tests/browser/
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import {
  TARGET_DIR, launchBrowser, openPage, requireTools, screenshot, startServer, stopProcess, waitFor,
} from './harness.mjs';

const REDIS = process.env.REDIS_SERVER || 'redis-server';
const SECRET = 'browser-cluster-secret';

// Fails the whole file, loudly, when chromium, ffmpeg, the npm packages, the binary or
// redis-server are missing.
requireTools();
{
  const r = spawnSync(REDIS, ['--version'], { encoding: 'utf8' });
  if (r.error || r.status !== 0) {
    throw new Error(`browser cluster tests cannot run, missing: redis-server (${REDIS}) ` +
      '(apt-get install redis-server, or set REDIS_SERVER; scripts/test.sh installs it)');
  }
}

/** One PING over the unix socket: true on +PONG, false on anything else within 1 s. */
function redisPing(socket) {
  return new Promise((resolve) => {
    const conn = net.createConnection(socket);
    let reply = '';
    const done = (ok) => {
      conn.destroy();
      resolve(ok);
    };
    conn.setTimeout(1000, () => done(false));
    conn.on('connect', () => conn.write('PING\r\n'));
    conn.on('data', (d) => {
      reply += d;
      if (reply.includes('\r\n')) done(reply.startsWith('+PONG'));
    });
    conn.on('error', () => done(false));
  });
}

/** redis-server on DIR/redis.sock: no TCP port, no persistence; waits for PING. */
async function startRedis(dir) {
  const socket = path.join(dir, 'redis.sock');
  const logfile = path.join(dir, 'redis.log');
  const proc = spawn(REDIS, [
    '--port', '0', '--unixsocket', socket, '--unixsocketperm', '700',
    '--save', '', '--appendonly', 'no', '--dir', dir, '--logfile', logfile,
  ], { stdio: ['ignore', 'ignore', 'inherit'] });
  const log = () => {
    try {
      return readFileSync(logfile, 'utf8').split('\n').slice(-20).join('\n');
    } catch {
      return '(no log)';
    }
  };
  await waitFor(async () => {
    if (proc.exitCode !== null || proc.signalCode !== null) {
      throw new Error(`redis-server exited (code ${proc.exitCode}, signal ${proc.signalCode}):\n${log()}`);
    }
    return redisPing(socket);
  }, 10000, `redis-server to answer PING on ${socket}`).catch((err) => {
    proc.kill('SIGKILL');
    throw new Error(`${err.message}\n${log()}`);
  });
  return { proc, socket, url: `redis+unix://${socket}`, stop: () => stopProcess(proc, 'SIGTERM', 5000) };
}

describe('call page across a cluster', { timeout: 180000 }, () => {
  let dir;
  let redis;
  /** label → server (from the harness) with its node `id` from /api/cluster. */
  const nodes = {};
  let browser;
  /** Console logs of every page opened, for failure messages. */
  const allLogs = [];

  before(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'wsrelay-call-cluster-'));
    redis = await startRedis(dir);
    for (const label of ['A', 'B', 'C']) {
      nodes[label] = await startServer(['--cluster', redis.url, '--cluster-secret', SECRET]);
    }
    // Every node lists all three (by URL), with Redis reachable.
    const urls = Object.values(nodes).map((n) => n.http).sort();
    for (const [label, node] of Object.entries(nodes)) {
      const v = await waitFor(async () => {
        const res = await fetch(`${node.http}/api/cluster`);
        const c = await res.json();
        const listed = (c.nodes || []).map((n) => n.url).sort();
        return c.enabled && c.redis === 'ok' && JSON.stringify(listed) === JSON.stringify(urls) ? c : null;
      }, 10000, `node ${label} to list the three nodes in /api/cluster`);
      node.id = v.node.id;
      assert.ok(node.id, `node ${label} has an id: ${JSON.stringify(v)}`);
    }
    assert.equal(new Set(Object.values(nodes).map((n) => n.id)).size, 3, 'three distinct node ids');
    browser = await launchBrowser();
  });

  after(async () => {
    if (browser) await browser.close();
    for (const node of Object.values(nodes)) await node.stop();
    if (redis) await redis.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** Every node's and the pages' last log lines, for failure messages. */
  function diagnostics() {
    const file = path.join(TARGET_DIR, 'browser-call-cluster-failure.log');
    const servers = Object.entries(nodes).map(([l, n]) => `--- node ${l} (${n.http}, ${n.id}) ---\n${n.log}`).join('\n');
    writeFileSync(file, `${allLogs.map((l) => l.join('\n')).join('\n')}\n${servers}\n`);
    return `${allLogs.map((l) => l.slice(-15).join('\n')).join('\n')}\n(all logs: ${file})\n${servers}`;
  }

  /** A call page in its own browser context (own camera, own storage) on `base`. */
  async function join(room, name, base) {
    const context = await browser.newContext({ viewport: { width: 1000, height: 700 } });
    await context.grantPermissions(['camera', 'microphone'], { origin: base });
    const opened = await openPage(context, `${base}/call.html?room=${room}&name=${name}&debug=1`, name);
    allLogs.push(opened.logs);
    return opened;
  }

  const callStats = (page) => page.evaluate(() => window.wsrelayCall.stats());

  /** Wait until `page` decodes video from the peer named `from`; its stats entry. */
  async function seesVideoFrom(page, from, what) {
    return waitFor(async () => {
      const s = (await callStats(page)).find((p) => p.name === from);
      return s && s.framesDecoded > 0 && s.videoFrames > 0 && s.videoWidth > 0 ? s : null;
    }, 20000, what, 250).catch(async (err) => {
      const s = await callStats(page).catch(() => 'n/a');
      throw new Error(`${err.message}\nstats: ${JSON.stringify(s)}\n${diagnostics()}`);
    });
  }

  it('peers on nodes B and C see each other through a room homed on A', async (t) => {
    const room = 'cluster-call';
    const { A, B, C } = nodes;

    // A plain signaling client (no WebRTC) joins first, on A: A becomes the room's home.
    const hostContext = await browser.newContext();
    const host = await hostContext.newPage();
    const welcome = await host.evaluate((url) => new Promise((resolve, reject) => {
      const ws = new WebSocket(url);
      window.idleSignaling = ws;
      ws.onopen = () => ws.send(JSON.stringify({ type: 'join', peer: 'host', meta: { name: 'host' } }));
      ws.onmessage = (e) => {
        const m = JSON.parse(e.data);
        if (m.type === 'welcome') resolve(m);
        else if (m.type === 'error') reject(new Error(`join failed: ${e.data}`));
      };
      ws.onerror = () => reject(new Error(`WebSocket to ${url} failed`));
    }), `${A.ws}/signal/${room}`);
    assert.deepEqual(welcome.peers, [], 'the host is the first in the room');

    const alice = await join(room, 'alice', B.http);
    const bob = await join(room, 'bob', C.http);

    const a = await seesVideoFrom(alice.page, 'bob', 'alice (on B) to decode bob\'s video');
    const b = await seesVideoFrom(bob.page, 'alice', 'bob (on C) to decode alice\'s video');
    assert.equal(a.name, 'bob');
    assert.equal(b.name, 'alice');
    assert.notEqual(a.polite, b.polite, 'exactly one side of the pair is polite');
    assert.equal(a.connectionState, 'connected');
    assert.equal(b.connectionState, 'connected');
    await screenshot(alice.page, 'call-cluster-alice');
    t.diagnostic(`cluster call: alice (B) decoded ${a.framesDecoded} frames (${a.videoWidth}×${a.videoHeight}) ` +
      `from bob (C), bob decoded ${b.framesDecoded} from alice`);

    // /api/rooms on A: one room, homed on A, each peer on its node (the pages join in
    // whichever order their cameras open).
    const aliceId = await alice.page.evaluate(() => window.wsrelayCall.client.peerId);
    const bobId = await bob.page.evaluate(() => window.wsrelayCall.client.peerId);
    const res = await fetch(`${A.http}/api/rooms`);
    assert.equal(res.status, 200);
    const rooms = await res.json();
    const entry = (rooms.rooms || []).find((r) => r.room === room);
    assert.ok(entry, `A lists the room: ${JSON.stringify(rooms)}`);
    assert.equal(entry.home, A.id, JSON.stringify(entry));
    assert.equal((entry.nodes || []).length, 3, JSON.stringify(entry));
    assert.deepEqual(
      Object.fromEntries(entry.nodes.map(({ peer, node }) => [peer, node])),
      { host: A.id, [aliceId]: B.id, [bobId]: C.id },
      JSON.stringify(entry),
    );

    await alice.page.close();
    await bob.page.close();
    const closed = await host.evaluate(() => new Promise((resolve) => {
      const ws = window.idleSignaling;
      ws.onclose = (e) => resolve({ code: e.code, reason: e.reason });
      ws.send(JSON.stringify({ type: 'leave' }));
    }));
    assert.deepEqual(closed, { code: 1000, reason: 'left' }, 'the host leaves for good');
    await hostContext.close();
  });
});
