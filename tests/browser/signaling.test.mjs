// static/js/signaling.js in headless Chromium against the real server's /signal.
//
// Client A reaches the server through a TCP proxy owned by the test; B connects
// directly. `proxy.drop()` resets A's TCP connection in both directions with no close
// frame — what a lost network or a server-side drop looks like to both ends — and
// `proxy.pause()` keeps A from reconnecting for a while, so messages pile up.
// Run: node --test tests/browser/
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { launchBrowser, openPage, requireTools, startProxy, startServer, waitFor } from './harness.mjs';

// Fails the whole file, loudly, when chromium, ffmpeg, the npm packages or the binary are missing.
requireTools();

describe('signaling client', { timeout: 120000 }, () => {
  let server;
  let proxy;
  let browser;
  let page;
  let logs;

  before(async () => {
    server = await startServer();
    proxy = await startProxy(new URL(server.http).host);
    browser = await launchBrowser();
    const context = await browser.newContext();
    // Any page of the server's origin can import the module; the call page without a
    // room does nothing on its own.
    ({ page, logs } = await openPage(context, `${proxy.http}/call.html`, 'sig'));
    await page.evaluate(async () => {
      const mod = await import('/js/signaling.js');
      window.SignalingClient = mod.SignalingClient;
      window.backoffDelay = mod.backoffDelay;
      /** name → {client, states: [], got: {type: [msgs]}} */
      window.t = {};
      window.mk = (name, url, opts) => {
        const client = new mod.SignalingClient(url, { initialBackoffMs: 100, maxBackoffMs: 800, ...opts });
        const rec = { client, states: [], got: {} };
        client.on('statechange', (s) => rec.states.push(s.state));
        for (const type of ['welcome', 'peer-joined', 'peer-left', 'peer-reconnecting', 'message', 'error']) {
          client.on(type, (m) => (rec.got[type] ||= []).push(m));
        }
        window.t[name] = rec;
        return client;
      };
    });
  });

  after(async () => {
    if (browser) await browser.close();
    if (proxy) await proxy.close();
    if (server) await server.stop();
  });

  const fail = (err) => {
    throw new Error(`${err.message}\n--- page ---\n${logs.slice(-30).join('\n')}\n--- server ---\n${server.log}`);
  };
  const state = (name) => page.evaluate((n) => window.t[n].client.state, name);
  const got = (name, type) => page.evaluate(([n, ty]) => window.t[n].got[ty] || [], [name, type]);

  it('queues sends made before the socket is open and delivers them after welcome', async () => {
    const sentIn = await page.evaluate(async ([direct]) => {
      const a = window.mk('q1', `${direct}/signal/queue`, { meta: { name: 'q1' } });
      await new Promise((resolve) => {
        a.on('welcome', resolve);
        a.connect();
      });
      const b = window.mk('q2', `${direct}/signal/queue`);
      b.connect();
      // The socket cannot be open yet: this send must be queued, not lost.
      const s = `${b.state}/${b._ws.readyState}`;
      b.message({ early: true });
      return s;
    }, [server.ws]);
    assert.equal(sentIn, 'connecting/0', 'message was sent before the socket was open');
    const msgs = await waitFor(async () => {
      const m = await got('q1', 'message');
      return m.length > 0 ? m : null;
    }, 5000, 'q1 to receive the early message').catch(fail);
    assert.deepEqual(msgs[0].data, { early: true });
    assert.equal(msgs[0].from, await page.evaluate(() => window.t.q2.client.peerId));
  });

  it('survives a dropped connection: reconnecting → connected, same peer id, messages sent meanwhile arrive', async () => {
    await page.evaluate(([viaProxy, direct]) => {
      window.mk('a', `${viaProxy}/signal/room1`, { meta: { name: 'a' } }).connect();
      window.mk('b', `${direct}/signal/room1`, { meta: { name: 'b' } }).connect();
    }, [proxy.ws, server.ws]);
    await waitFor(async () => (await state('a')) === 'connected' && (await state('b')) === 'connected', 5000,
      'a and b connected').catch(fail);
    const idA = await page.evaluate(() => window.t.a.client.peerId);
    const idB = await page.evaluate(() => window.t.b.client.peerId);
    await waitFor(async () => (await got('b', 'peer-joined')).some((p) => p.peer === idA) ||
      (await page.evaluate(() => window.t.b.client.peers.size)) > 0, 5000, 'b to know a').catch(fail);

    // Cut a's connection and keep it from coming back for a while.
    proxy.pause();
    proxy.drop();
    await waitFor(async () => (await state('a')) === 'reconnecting', 3000, 'a to be reconnecting').catch(fail);
    // The server noticed too: b is told a is reconnecting (so b's next message is queued
    // for a instead of being written to a dead socket).
    await waitFor(async () => (await got('b', 'peer-reconnecting')).some((p) => p.peer === idA), 5000,
      'b to get peer-reconnecting for a').catch(fail);
    await page.evaluate(([ida, idb]) => {
      window.t.b.client.message({ n: 1, while: 'away' }, ida);
      window.t.b.client.message({ n: 2, while: 'away' }, ida);
      window.t.a.client.message({ from_a: 'queued in the client' }, idb); // a is offline: queued locally
    }, [idA, idB]);
    await sleep(1500); // a retries against the paused proxy and fails a few times
    assert.equal(await state('a'), 'reconnecting');
    proxy.resume();

    await waitFor(async () => (await state('a')) === 'connected', 5000, 'a to reconnect').catch(fail);
    assert.equal(await page.evaluate(() => window.t.a.client.peerId), idA, 'same peer id after resume');
    const welcomes = await got('a', 'welcome');
    assert.equal(welcomes.at(-1).resumed, true, 'the second welcome is a resume');
    const states = await page.evaluate(() => window.t.a.states);
    assert.deepEqual(states.slice(0, 2), ['connecting', 'connected']);
    assert.ok(states.includes('reconnecting'), `states: ${states}`);
    assert.equal(states.at(-1), 'connected');

    const toA = await waitFor(async () => {
      const m = await got('a', 'message');
      return m.length >= 2 ? m : null;
    }, 5000, 'a to receive the messages queued by the server').catch(fail);
    assert.deepEqual(toA.map((m) => m.data.n), [1, 2], 'in order');
    assert.ok(toA.every((m) => m.from === idB));
    const toB = await waitFor(async () => {
      const m = await got('b', 'message');
      return m.some((x) => x.from === idA) ? m : null;
    }, 5000, 'b to receive what a sent while offline').catch(fail);
    assert.deepEqual(toB.find((x) => x.from === idA).data, { from_a: 'queued in the client' });
    // b never saw a leave.
    assert.equal((await got('b', 'peer-left')).filter((p) => p.peer === idA).length, 0);
  });

  it('close() sends leave: the other peer gets peer-left and the client stays closed', async () => {
    const idA = await page.evaluate(() => window.t.a.client.peerId);
    await page.evaluate(() => window.t.a.client.close());
    await waitFor(async () => (await got('b', 'peer-left')).some((p) => p.peer === idA), 3000,
      'b to get peer-left').catch(fail);
    await sleep(500);
    assert.equal(await state('a'), 'closed');
    await assert.rejects(page.evaluate(() => window.t.a.client.send({ type: 'ping' })), /closed/);
  });

  it('backoff grows exponentially with jitter and is capped', async () => {
    const d = await page.evaluate(() => {
      const o = { initialBackoffMs: 250, maxBackoffMs: 10000, backoffFactor: 2 };
      return {
        lo: [0, 1, 2, 3, 10].map((n) => window.backoffDelay(n, o, () => 0)),
        hi: [0, 1, 2, 3, 10].map((n) => window.backoffDelay(n, o, () => 1)),
      };
    });
    assert.deepEqual(d.lo, [125, 250, 500, 1000, 5000]);
    assert.deepEqual(d.hi, [250, 500, 1000, 2000, 10000]);
  });
});

describe('signaling client across a server restart', { timeout: 60000 }, () => {
  let server;
  let proxy;
  let browser;

  after(async () => {
    if (browser) await browser.close();
    if (proxy) await proxy.close();
    if (server) await server.stop();
  });

  it('reconnects to the restarted server and joins afresh with the same peer id', async () => {
    server = await startServer();
    proxy = await startProxy(new URL(server.http).host);
    browser = await launchBrowser();
    const { page, logs } = await openPage(await browser.newContext(), `${proxy.http}/call.html`, 'restart');
    const fail = (err) => {
      throw new Error(`${err.message}\n--- page ---\n${logs.slice(-30).join('\n')}\n--- server ---\n${server.log}`);
    };
    await page.evaluate(async (url) => {
      const { SignalingClient } = await import('/js/signaling.js');
      const c = new SignalingClient(url, { initialBackoffMs: 100, maxBackoffMs: 500 });
      window.c = c;
      window.states = [];
      window.welcomes = [];
      window.closes = [];
      c.on('statechange', (s) => window.states.push(s.state));
      c.on('welcome', (w) => window.welcomes.push({ peer: w.peer, resumed: w.resumed }));
      c.on('reconnect-scheduled', (r) => window.closes.push(r.reason));
      c.connect();
    }, `${proxy.ws}/signal/restart`);
    await waitFor(() => page.evaluate(() => window.c.state === 'connected'), 5000, 'connected').catch(fail);
    const id = await page.evaluate(() => window.c.peerId);

    // Graceful shutdown closes the socket (1001); the new server knows no session.
    const oldLog = server.log;
    await server.stop();
    await waitFor(() => page.evaluate(() => window.c.state === 'reconnecting'), 5000, 'reconnecting').catch(fail);
    server = await startServer();
    proxy.retarget(new URL(server.http).host);
    await waitFor(() => page.evaluate(() => window.welcomes.length === 2), 10000, 'a second welcome').catch((err) => {
      throw new Error(`${err.message}\n--- old server ---\n${oldLog}`);
    });
    const r = await page.evaluate(() => ({
      state: window.c.state, peer: window.c.peerId, welcomes: window.welcomes, closes: window.closes,
    }));
    assert.equal(r.state, 'connected');
    assert.equal(r.peer, id, 'the same peer id, asked for again in the fresh join');
    assert.deepEqual(r.welcomes.map((w) => w.resumed), [false, false]);
    assert.match(r.closes[0], /1001/, `first close reason: ${r.closes[0]}`);
  });
});
