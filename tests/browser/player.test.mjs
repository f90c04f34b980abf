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
        // What the server says, in words, next to what the player measures.
        await waitFor(async () => /H\.264/.test(await page.locator('#video-info').textContent()), 5000, 'video codec in words');
        assert.match(await page.locator('#audio-info').textContent(), /^AAC/);
        assert.match(await page.locator('#viewers').textContent(), /^[1-9]\d*$/, 'viewers from the API');
        assert.match(await page.locator('#bitrate').textContent(), /\d+ (kb|Mb)\/s$/, 'publisher bitrate from the API');
        assert.match(await page.locator('#latency').textContent(), /^≈ \d+\.\d s$/, 'behind-live estimate');
        assert.ok(s.behindLiveS !== null && s.behindLiveS >= 0 && s.behindLiveS < 5, `behind live: ${s.behindLiveS}`);
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
      assert.match(text, /H\.264/, 'video codec shown in words');
      assert.match(text, /AAC/, 'audio codec shown in words');
      assert.equal(await row.getAttribute('data-playable'), 'yes');
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

describe('player page with a --static-dir that lacks the libraries', { timeout: 60000 }, () => {
  let server;
  let browser;
  let dir;

  before(async () => {
    // A copy of static/ without vendor/: a developer's pages directory.
    dir = mkdtempSync(path.join(tmpdir(), 'wsrelay-static-'));
    cpSync(STATIC_DIR, dir, { recursive: true, filter: (src) => !src.includes('vendor') });
    server = await startServer(['--static-dir', dir]);
    browser = await launchBrowser();
  });

  after(async () => {
    if (browser) await browser.close();
    if (server) await server.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  for (const lib of ['mpegts', 'flvjs']) {
    it(`says what is missing and how to fix it when ${lib} is missing`, async () => {
      const context = await browser.newContext();
      const { page } = await openPage(context, `${server.http}/player.html?stream=cam1&lib=${lib}`, `novendor-${lib}`);
      const notice = page.locator('#notice');
      await notice.waitFor({ state: 'visible', timeout: 5000 });
      const text = await notice.textContent();
      assert.match(text, lib === 'flvjs' ? /flv\.js is not available/ : /mpegts\.js is not available/);
      assert.match(text, /--static-dir/);
      assert.doesNotMatch(text, /npm/);
      if (lib === 'mpegts') await screenshot(page, 'player-no-vendor');
      await context.close();
    });
  }
});

/** A page-level stand-in for a browser that can't decode H.264 (Chromium here can). */
function noH264() {
  const original = MediaSource.isTypeSupported.bind(MediaSource);
  MediaSource.isTypeSupported = (type) => !/avc1/i.test(type) && original(type);
}

/** A browser whose MSE refuses every source buffer, as for a codec it can't decode. */
function refuseSourceBuffers() {
  MediaSource.prototype.addSourceBuffer = function addSourceBuffer(type) {
    throw new DOMException(
      `Failed to execute 'addSourceBuffer' on 'MediaSource': The type provided ('${type}') is unsupported.`,
      'NotSupportedError');
  };
}

describe('a stream this browser cannot play', { timeout: 120000 }, () => {
  let server;
  let browser;
  let publisher;

  before(async () => {
    server = await startServer();
    publisher = publish(server.http, 'cam1');
    await waitFor(() => apiStream(server.http, 'cam1'), 15000, 'cam1 in /api/streams');
    browser = await launchBrowser();
  });

  after(async () => {
    if (browser) await browser.close();
    if (publisher) await publisher.kill();
    if (server) await server.stop();
  });

  /** A page in a fresh context with `init` run before the page's scripts; counts live sockets. */
  async function open(url, init, name) {
    const context = await browser.newContext({ viewport: { width: 1000, height: 800 } });
    await context.addInitScript(init);
    const sockets = [];
    context.on('page', (p) => p.on('websocket', (ws) => sockets.push(ws.url())));
    const { page, logs } = await openPage(context, url, name);
    return { context, page, logs, sockets };
  }

  it('the player page says so in words, offers ffplay and does not retry', async () => {
    const { context, page, logs, sockets } = await open(`${server.http}/player.html?stream=cam1`, noH264, 'noh264');
    try {
      const notice = page.locator('#notice');
      await notice.waitFor({ state: 'visible', timeout: 5000 });
      await sleep(4000); // long enough for a retry loop to show itself
      const text = await notice.textContent();
      assert.match(text, /This browser can't play H\.264 video\./, text);
      assert.match(text, new RegExp(`ffplay ${server.http}/live/cam1\\.flv`), text);
      assert.doesNotMatch(text, /CodecUnsupported|Exception|retrying/i, text);
      assert.equal(await page.locator('#state').textContent(), "can't play here");
      assert.equal(await page.evaluate(() => window.wsrelayPlayer), null, 'no player runs');
      assert.deepEqual(sockets.filter((u) => u.includes('/live/')), [], 'no connection to the stream was tried');
      const overflow = await notice.evaluate((n) => n.scrollWidth - n.clientWidth);
      assert.ok(overflow <= 0, `the notice overflows its box by ${overflow} px`);
      await screenshot(page, 'player-cant-play');
    } catch (err) {
      throw new Error(`${err.message}\n--- page ---\n${logs.slice(-40).join('\n')}`);
    } finally {
      await context.close();
    }
  });

  it('the index page offers no Play button for it', async () => {
    const { context, page } = await open(`${server.http}/`, noH264, 'index-noh264');
    try {
      const row = page.locator('tr[data-stream="cam1"]');
      await row.waitFor({ timeout: 5000 });
      assert.equal(await row.getAttribute('data-playable'), 'no');
      assert.equal(await row.locator('a.button').count(), 0, 'no Play buttons');
      const text = await row.textContent();
      assert.match(text, /Can't play here/);
      assert.match(text, /This browser can't play H\.264 video/);
      await screenshot(page, 'index-cant-play');
    } finally {
      await context.close();
    }
  });

  it('codecs.js: verdicts in words for codecs the libraries or this browser cannot play', async () => {
    const context = await browser.newContext();
    const { page } = await openPage(context, `${server.http}/`, 'codecs');
    try {
      const verdicts = await page.evaluate(async () => {
        const { playability } = await import('/js/codecs.js');
        const out = {};
        for (const [v, a] of [['h264', 'aac'], ['hevc', 'aac'], ['vp9', 'aac'], ['h264', 'speex'], ['h264', 'opus']]) {
          const s = { video: { codec: v }, audio: { codec: a } };
          out[`${v}+${a}`] = { mpegts: playability(s, 'mpegts'), flvjs: playability(s, 'flvjs') };
        }
        return out;
      });
      const h = verdicts['h264+aac'];
      assert.ok(h.mpegts.playable && h.flvjs.playable && !h.mpegts.message, JSON.stringify(h));
      const hevc = verdicts['hevc+aac'].mpegts;
      // Whether HEVC decodes depends on the browser build; when it can't, it says so.
      if (!hevc.playable) assert.equal(hevc.message, "This browser can't play HEVC (H.265) video.");
      assert.ok(!verdicts['hevc+aac'].flvjs.playable, 'flv.js reads no HEVC');
      const vp9 = verdicts['vp9+aac'].mpegts;
      assert.ok(!vp9.playable);
      assert.match(vp9.message, /No browser player reads VP9 video from FLV/);
      const speex = verdicts['h264+speex'].mpegts;
      assert.ok(speex.playable && speex.hasAudio === false, JSON.stringify(speex));
      assert.match(speex.message, /Speex.*The video plays without sound/);
      const opus = verdicts['h264+opus'];
      assert.ok(opus.mpegts.playable && !opus.mpegts.message, JSON.stringify(opus.mpegts));
      assert.equal(opus.flvjs.otherLib, 'mpegts', 'flv.js suggests mpegts.js for Opus');
    } finally {
      await context.close();
    }
  });

  it('a codec refusal while playing stops with words instead of a retry loop', async () => {
    const { context, page, logs, sockets } = await open(`${server.http}/player.html?stream=cam1`, refuseSourceBuffers, 'refuse');
    try {
      const stats = () => page.evaluate(() => window.wsrelayPlayer && window.wsrelayPlayer.stats());
      const s = await waitFor(async () => {
        const st = await stats();
        return st && st.state === 'error' ? st : null;
      }, 10000, 'the player to give up');
      await sleep(4000);
      const later = await stats();
      assert.equal(later.state, 'error', 'still stopped');
      assert.equal(later.restarts, s.restarts, 'no retries');
      assert.equal(sockets.filter((u) => u.includes('/live/')).length, 1, 'one connection, no retries');
      assert.match(s.detail, /this browser can't decode the stream's (H\.264|AAC)/, s.detail);
      const text = await page.locator('#notice').textContent();
      assert.match(text, /Can't play this stream/);
      assert.match(text, /ffplay/);
      assert.doesNotMatch(text, /addSourceBuffer|NotSupportedError|MediaMSEError/, text);
      const overflow = await page.locator('#notice').evaluate((n) => n.scrollWidth - n.clientWidth);
      assert.ok(overflow <= 0, `the notice overflows its box by ${overflow} px`);
      await screenshot(page, 'player-codec-refused');
    } catch (err) {
      throw new Error(`${err.message}\n--- page ---\n${logs.slice(-40).join('\n')}`);
    } finally {
      await context.close();
    }
  });
});
