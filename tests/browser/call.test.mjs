// The call page: two (then three) headless Chromium pages with fake camera and mic join
// one room through the real server's /signal and see each other's video over WebRTC.
// Run: node --test tests/browser/
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  TARGET_DIR, launchBrowser, openPage, requireTools, screenshot, startProxy, startServer, waitFor,
} from './harness.mjs';

// Fails the whole file, loudly, when chromium, ffmpeg, the npm packages or the binary are missing.
requireTools();

describe('call page', { timeout: 180000 }, () => {
  let server;
  let browser;
  const contexts = [];
  /** Console logs of every page opened, for failure messages. */
  const allLogs = [];

  before(async () => {
    server = await startServer();
    browser = await launchBrowser();
  });

  after(async () => {
    if (browser) await browser.close();
    if (server) await server.stop();
  });

  /**
   * A page in its own browser context (own camera, own storage), like another person.
   * `base` is the server's URL, or a proxy's in front of it.
   */
  async function join(room, name, base = server.http) {
    const context = await browser.newContext({ viewport: { width: 1000, height: 700 } });
    contexts.push(context);
    await context.grantPermissions(['camera', 'microphone'], { origin: base });
    const opened = await openPage(context, `${base}/call.html?room=${room}&name=${name}&debug=1`, name);
    allLogs.push(opened.logs);
    return opened;
  }

  const callStats = (page) => page.evaluate(() => window.wsrelayCall.stats());

  /** Wait until `page` decodes video from `count` peers. */
  async function seesVideoFrom(page, count, logs, what) {
    return waitFor(async () => {
      const s = await callStats(page);
      return s.length === count && s.every((p) => p.framesDecoded > 0 && p.videoFrames > 0 && p.videoWidth > 0) ? s : null;
    }, 20000, what, 250).catch(async (err) => {
      const s = await callStats(page).catch(() => 'n/a');
      const file = path.join(TARGET_DIR, 'browser-call-failure.log');
      writeFileSync(file, allLogs.map((l) => l.join('\n')).join('\n') + `\n--- server ---\n${server.log}\n`);
      const pages = `${allLogs.map((l) => l.slice(-15).join('\n')).join('\n')}\n(all page logs: ${file})`;
      throw new Error(`${err.message}\nstats: ${JSON.stringify(s)}\n${pages}\n--- server ---\n${server.log}`);
    });
  }

  it('two peers see each other; when one leaves the other\'s peer list updates', async (t) => {
    const alice = await join('r1', 'alice');
    const bob = await join('r1', 'bob');

    const a = await seesVideoFrom(alice.page, 1, alice.logs, 'alice to decode bob\'s video');
    const b = await seesVideoFrom(bob.page, 1, bob.logs, 'bob to decode alice\'s video');
    assert.equal(a[0].name, 'bob');
    assert.equal(b[0].name, 'alice');
    assert.notEqual(a[0].polite, b[0].polite, 'exactly one side of the pair is polite');
    assert.equal(a[0].connectionState, 'connected');
    await screenshot(alice.page, 'call-alice');
    t.diagnostic(`call: alice decoded ${a[0].framesDecoded} frames (${a[0].videoWidth}×${a[0].videoHeight}), ` +
      `bob decoded ${b[0].framesDecoded}`);

    // The index page lists the room with its two peers and links to it.
    const index = await alice.page.context().newPage();
    await index.goto(`${server.http}/`);
    await index.locator('#rooms a', { hasText: 'r1 (2)' }).waitFor({ timeout: 5000 });
    assert.equal(await index.locator('#rooms a', { hasText: 'r1 (2)' }).getAttribute('href'), '/call.html?room=r1');
    await index.close();

    // The peer list shows bob; then bob leaves and alice's list empties.
    const bobId = await bob.page.evaluate(() => window.wsrelayCall.client.peerId);
    await alice.page.locator(`#peers li[data-peer="${bobId}"]`).waitFor({ timeout: 2000 });
    await bob.page.click('#leave');
    await alice.page.locator(`#peers li[data-peer="${bobId}"]`).waitFor({ state: 'detached', timeout: 5000 });
    await alice.page.locator(`.tile[data-peer="${bobId}"]`).waitFor({ state: 'detached', timeout: 1000 });
    assert.equal(await alice.page.locator('#peers li').count(), 0);
    assert.equal(await bob.page.evaluate(() => window.wsrelayCall.client.state), 'closed');
    await alice.page.close();
    await bob.page.close();
  });

  it('three peers form a mesh: everyone decodes video from both others', async () => {
    const peers = [await join('r3', 'p1'), await join('r3', 'p2'), await join('r3', 'p3')];
    for (const [i, p] of peers.entries()) {
      await seesVideoFrom(p.page, 2, p.logs, `p${i + 1} to decode video from both others`);
    }
    await screenshot(peers[2].page, 'call-mesh');
    for (const p of peers) await p.page.close();
  });

  it('mute and camera off; simultaneous renegotiation (glare) is resolved', async (t) => {
    const x = await join('r4', 'x');
    const y = await join('r4', 'y');
    await seesVideoFrom(x.page, 1, x.logs, 'x to decode y');
    await x.page.click('#mute');
    await x.page.click('#camera');
    const enabled = await x.page.evaluate(() => {
      const v = document.querySelector('#local-video');
      return v.srcObject.getTracks().map((t) => `${t.kind}:${t.enabled}`).sort();
    });
    assert.deepEqual(enabled, ['audio:false', 'video:false']);
    assert.equal(await x.page.locator('#mute').textContent(), 'Unmute');
    assert.equal(await x.page.locator('#camera').textContent(), 'Camera on');

    // Glare: both sides renegotiate at the same moment (an ICE restart each). The polite
    // side rolls back, the impolite side's offer wins, and the call goes on.
    await seesVideoFrom(y.page, 1, y.logs, 'y to decode x');
    const restart = (page) => page.evaluate(() => {
      for (const l of window.wsrelayCall.links.values()) l.pc.restartIce();
    });
    await Promise.all([restart(x.page), restart(y.page)]);
    for (const [name, p] of [['x', x], ['y', y]]) {
      const before = (await callStats(p.page))[0].bytesReceived;
      await waitFor(async () => {
        const [st] = await callStats(p.page);
        const sig = await p.page.evaluate(() => [...window.wsrelayCall.links.values()][0].pc.signalingState);
        return st.connectionState === 'connected' && sig === 'stable' && st.bytesReceived > before + 10000;
      }, 15000, `${name}: media flowing after simultaneous renegotiation`, 250);
    }
    const glare = [...x.logs, ...y.logs].filter((l) => l.includes('ignore colliding offer'));
    t.diagnostic(`glare: ${glare.length} colliding offer(s) ignored by the impolite side`);
    await x.page.close();
    await y.page.close();
  });

  it('a dropped signaling connection does not end the call: reconnecting, then back, media keeps flowing', async () => {
    const proxy = await startProxy(new URL(server.http).host);
    try {
      const far = await join('r5', 'far', proxy.http); // its signaling goes through the proxy
      const near = await join('r5', 'near');
      await seesVideoFrom(near.page, 1, near.logs, 'near to decode far');
      await seesVideoFrom(far.page, 1, far.logs, 'far to decode near');
      const farId = await far.page.evaluate(() => window.wsrelayCall.client.peerId);
      const badge = near.page.locator(`#peers li[data-peer="${farId}"] .badge`);

      proxy.pause();
      proxy.drop();
      await badge.filter({ hasText: 'reconnecting' }).waitFor({ timeout: 5000 });
      const before = (await callStats(near.page))[0].framesDecoded;
      await sleep(1500);
      const during = (await callStats(near.page))[0].framesDecoded;
      assert.ok(during > before, `media flows peer to peer while signaling is down (${before} → ${during} frames)`);
      proxy.resume();

      await waitFor(() => far.page.evaluate(() => window.wsrelayCall.client.state === 'connected'), 5000,
        'far to reconnect');
      assert.equal(await far.page.evaluate(() => window.wsrelayCall.client.peerId), farId);
      await badge.filter({ hasText: 'connected' }).waitFor({ timeout: 5000 });
      assert.equal(await near.page.locator('#peers li').count(), 1);
      await far.page.close();
      await near.page.close();
    } finally {
      await proxy.close();
    }
  });
});
