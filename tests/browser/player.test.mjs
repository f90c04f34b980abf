// The player and index pages in headless Chromium against the real server and a real
// ffmpeg publisher. Run: node --test tests/browser/
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  STATIC_DIR, apiStream, launchBrowser, openPage, publish, requireTools, screenshot, startServer, waitFor,
} from './harness.mjs';

/** Publisher reconnect grace given to the server; the restart test stays well inside it. */
const GRACE_MS = 10000;

// Fails the whole file, loudly, when chromium, ffmpeg, the npm packages or the binary are missing.
requireTools();

describe('player page', { timeout: 180000 }, () => {
  let server;
  let browser;
  let context;
  const publishers = [];

  before(async () => {
    server = await startServer(['--grace-ms', String(GRACE_MS)]);
    publishers.push(publish(server.http, 'cam1'));
    await waitFor(() => apiStream(server.http, 'cam1'), 15000, 'cam1 in /api/streams');
    browser = await launchBrowser();
    context = await browser.newContext({ viewport: { width: 1200, height: 800 } });
  });

  after(async () => {
    if (browser) await browser.close();
    for (const p of publishers) await p.kill();
    if (server) await server.stop();
  });

  /** Failure context: the page's console and the tails of the server and ffmpeg logs. */
  function context_(logs) {
    return `\n--- page ---\n${logs.slice(-40).join('\n')}\n--- server ---\n${server.log}\n` +
      publishers.map((p) => `--- ${p.log.prefix} ---\n${p.log}`).join('\n');
  }

  const stats = (page) => page.evaluate(() => {
    const p = window.wsrelayPlayer;
    return p ? p.stats() : null;
  });

  for (const lib of ['mpegts', 'flvjs']) {
    it(`plays a live H.264/AAC stream with ${lib}: 3 s of playback within 10 s`, async (t) => {
      const { page, logs } = await openPage(context, `${server.http}/player.html?stream=cam1&lib=${lib}`, lib);
      try {
        const opened = Date.now();
        let first = null; // currentTime when the first sample came in
        const s = await waitFor(async () => {
          const st = await stats(page);
          if (!st) return null;
          first ??= st.currentTime;
          return st.currentTime - first >= 3 && st.playedS >= 3 && st.decodedFrames > 0 ? st : null;
        }, 10000, `${lib}: currentTime to advance 3 s, decoded frames > 0`, 200).catch((err) => {
          throw new Error(err.message + context_(logs));
        });
        const tookMs = Date.now() - opened;
        assert.ok(first < 1, `playback starts at the beginning of the connection's timeline (${first})`);
        assert.equal(s.lib, lib);
        assert.equal(s.width, 640, `video width (stats: ${JSON.stringify(s)})`);
        assert.equal(s.height, 360);
        const shown = await page.locator('#state').textContent();
        assert.equal(shown, 'playing');
        assert.equal(await page.locator('#resolution').textContent(), '640×360');
        const file = await screenshot(page, `player-${lib}`);
        t.diagnostic(`${lib}: first frame after ${s.startupMs} ms, 3 s played after ${tookMs} ms; decoded ${s.decodedFrames}, dropped ` +
          `${s.droppedFrames}, buffer ${s.bufferS.toFixed(2)} s; screenshot ${file}`);
      } finally {
        await page.close();
      }
    });
  }

  it('keeps playing when the publisher is killed and comes back within the grace period', async (t) => {
    const { page, logs } = await openPage(context, `${server.http}/player.html?stream=cam1`, 'restart');
    try {
      await waitFor(async () => {
        const st = await stats(page);
        return st && st.playedS >= 2;
      }, 10000, 'playback before the restart', 200).catch((err) => { throw new Error(err.message + context_(logs)); });

      await publishers.shift().kill();
      await sleep(2000); // publisher gone for 2 s (grace is 10 s)
      const beforeRestart = await stats(page);
      publishers.push(publish(server.http, 'cam1'));
      const restartedAt = Date.now();

      // Recovered: 3 s more media played after the new publisher started, within 12 s.
      const s = await waitFor(async () => {
        const st = await stats(page);
        return st && st.playedS >= beforeRestart.playedS + 3 && st.state === 'playing' ? st : null;
      }, 12000, 'playback to continue after the publisher restart', 200).catch((err) => {
        throw new Error(err.message + context_(logs));
      });
      const tookMs = Date.now() - restartedAt;
      await screenshot(page, 'player-restart');
      t.diagnostic(`publisher restart: 3 s played ${tookMs} ms after restart; page reconnects: ` +
        `${s.restarts} (0 = the same connection went on)`);
    } finally {
      await page.close();
    }
  });

  it('index page lists live streams with play links and picks up new ones on its own', async () => {
    const { page, logs } = await openPage(context, `${server.http}/`, 'index');
    try {
      const row = page.locator('tr[data-stream="cam1"]');
      await row.waitFor({ timeout: 5000 });
      const text = await row.textContent();
      assert.match(text, /h264/i, 'video codec shown');
      assert.match(text, /640×360/, 'resolution shown');
      assert.equal(await row.locator('a.button.primary').getAttribute('href'), '/player.html?stream=cam1');
      const urls = await page.locator('tr.urls input').evaluateAll((els) => els.map((e) => e.value));
      const host = new URL(server.http).host;
      assert.ok(urls.includes(`ws://${host}/live/cam1.flv`), `WS-FLV URL listed: ${urls}`);
      assert.ok(urls.includes(`http://${host}/live/cam1.flv`), `HTTP-FLV URL listed: ${urls}`);

      // A second stream appears without a reload.
      publishers.push(publish(server.http, 'cam2', { size: '320x240' }));
      await page.locator('tr[data-stream="cam2"]').waitFor({ timeout: 10000 }).catch((err) => {
        throw new Error(err.message + context_(logs));
      });
      await screenshot(page, 'index');
    } finally {
      await page.close();
    }
  });
});

describe('player page after the stream ends', { timeout: 120000 }, () => {
  let server;
  let browser;
  let publisher;

  before(async () => {
    // A short grace period: the end reaches the page quickly.
    server = await startServer(['--grace-ms', '500']);
    browser = await launchBrowser();
  });

  after(async () => {
    if (browser) await browser.close();
    if (publisher) await publisher.kill();
    if (server) await server.stop();
  });

  it('says the stream ended, retries with backoff and resumes on its own when it is back', async (t) => {
    const context = await browser.newContext();
    // Opened before the stream exists: 404s are retried too.
    const { page, logs } = await openPage(context, `${server.http}/player.html?stream=end1`, 'end');
    const stats = () => page.evaluate(() => window.wsrelayPlayer && window.wsrelayPlayer.stats());
    const fail = (err) => {
      throw new Error(`${err.message}\n--- page ---\n${logs.slice(-40).join('\n')}\n--- server ---\n${server.log}`);
    };
    await waitFor(async () => (await stats())?.state === 'retrying', 5000, 'retrying while the stream does not exist').catch(fail);
    await page.locator('#notice', { hasText: 'not live' }).waitFor({ timeout: 5000 });

    publisher = publish(server.http, 'end1');
    await waitFor(async () => (await stats())?.playedS >= 2, 20000, 'playback once the stream exists').catch(fail);
    await publisher.kill();
    publisher = null;
    const ended = await waitFor(async () => {
      const s = await stats();
      return s?.state === 'retrying' ? s : null;
    }, 8000, 'the page to notice the end').catch(fail);
    assert.match(ended.detail, /ended|no progress|retrying/, ended.detail);
    assert.match(await page.locator('#detail').textContent(), /retrying in/);
    await screenshot(page, 'player-ended');

    await sleep(3000); // a few failed attempts (404) against the missing stream
    const before_ = await stats();
    publisher = publish(server.http, 'end1');
    const back = Date.now();
    const s = await waitFor(async () => {
      const st = await stats();
      return st?.state === 'playing' && st.playedS >= before_.playedS + 2 ? st : null;
    }, 20000, 'playback to resume after the stream is back').catch(fail);
    t.diagnostic(`stream back: 2 s played ${Date.now() - back} ms after the publisher restarted ` +
      `(page reconnect attempts so far: ${s.restarts})`);
    assert.ok(await page.locator('#notice').isHidden(), 'the "not live" notice is gone');
    await context.close();
  });
});

describe('player page without the npm libraries', { timeout: 60000 }, () => {
  let server;
  let browser;
  let dir;

  before(async () => {
    // A copy of static/ without node_modules, as on a checkout where `npm ci` never ran.
    dir = mkdtempSync(path.join(tmpdir(), 'wsrelay-static-'));
    cpSync(STATIC_DIR, dir, { recursive: true, filter: (src) => !src.includes('node_modules') });
    server = await startServer(['--static-dir', dir]);
    browser = await launchBrowser();
  });

  after(async () => {
    if (browser) await browser.close();
    if (server) await server.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  for (const lib of ['mpegts', 'flvjs']) {
    it(`says to run npm ci --prefix static when ${lib} is missing`, async () => {
      const context = await browser.newContext();
      const { page } = await openPage(context, `${server.http}/player.html?stream=cam1&lib=${lib}`, `novendor-${lib}`);
      const notice = page.locator('#notice');
      await notice.waitFor({ state: 'visible', timeout: 5000 });
      const text = await notice.textContent();
      assert.match(text, /npm ci --prefix static/);
      assert.match(text, lib === 'flvjs' ? /flv\.js is not installed/ : /mpegts\.js is not installed/);
      if (lib === 'mpegts') await screenshot(page, 'player-no-vendor');
      await context.close();
    });
  }
});
