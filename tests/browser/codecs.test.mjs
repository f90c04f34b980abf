// Streams in codecs beyond H.264/AAC, published by a current ffmpeg (9.x, from
// scripts/ffmpeg9.sh: Debian's 5.1 cannot write Enhanced FLV): H.264 + Opus plays in the
// player page with mpegts.js; HEVC, which this Chromium can't decode, gets the codec
// message (player and index) instead of a retry loop. Run: node --test tests/browser/
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  apiStream, ffmpeg9, launchBrowser, openPage, publish, requireTools, screenshot, startServer, waitFor,
} from './harness.mjs';

requireTools();
const FFMPEG9 = ffmpeg9();

const HEVC = [
  '-c:v', 'libx265', '-preset', 'ultrafast', '-tune', 'zerolatency', '-pix_fmt', 'yuv420p',
  '-x265-params', 'keyint=25:min-keyint=25:log-level=error', '-b:v', '800k',
];
const OPUS = ['-c:a', 'libopus', '-b:a', '64k', '-ac', '2'];

describe('codecs beyond H.264/AAC (ffmpeg 9 publishers)', { timeout: 180000 }, () => {
  let server;
  let browser;
  const publishers = [];

  before(async () => {
    server = await startServer();
    publishers.push(publish(server.http, 'opus', { ffmpeg: FFMPEG9, audio: OPUS, sampleRate: 48000 }));
    publishers.push(publish(server.http, 'hevc', { ffmpeg: FFMPEG9, video: HEVC }));
    for (const name of ['opus', 'hevc']) {
      await waitFor(async () => (await apiStream(server.http, name))?.video, 20000, `${name} in /api/streams`);
    }
    browser = await launchBrowser();
  });

  after(async () => {
    if (browser) await browser.close();
    for (const p of publishers) await p.kill();
    if (server) await server.stop();
  });

  const context_ = (logs) => `\n--- page ---\n${logs.slice(-40).join('\n')}\n--- server ---\n${server.log}\n` +
    publishers.map((p) => `--- ${p.log.prefix} ---\n${p.log}`).join('\n');

  // ffmpeg 9 sends an Enhanced-FLV audio MultichannelConfig packet (AudioPacketType 4)
  // before the Opus sequence start, which mpegts.js 1.8.2 rejects ("Invalid video packet
  // type 4"); the relay drops it at ingest, so the page plays.
  it('H.264 + Opus plays with mpegts.js, audio shown as Opus', async (t) => {
    const context = await browser.newContext();
    const { page, logs } = await openPage(context, `${server.http}/player.html?stream=opus`, 'opus');
    try {
      const s = await waitFor(async () => {
        const st = await page.evaluate(() => window.wsrelayPlayer && window.wsrelayPlayer.stats());
        return st && st.playedS >= 2 && st.decodedFrames > 0 ? st : null;
      }, 15000, 'H.264 + Opus: 2 s played').catch((err) => { throw new Error(err.message + context_(logs)); });
      assert.match(s.audioCodec || '', /opus/i, `the library hands Opus to the browser: ${s.audioCodec}`);
      assert.match(await page.locator('#audio-info').textContent(), /^Opus/);
      assert.equal(s.restarts, 0, 'no reconnects');
      t.diagnostic(`H.264 + Opus: first frame after ${s.startupMs} ms`);
    } finally {
      await context.close();
    }
  });

  it('HEVC gets the codec message, not a retry loop, on the player and index pages', async () => {
    const context = await browser.newContext();
    const sockets = [];
    context.on('page', (p) => p.on('websocket', (ws) => sockets.push(ws.url())));
    const { page, logs } = await openPage(context, `${server.http}/player.html?stream=hevc`, 'hevc');
    try {
      const canDecode = await page.evaluate(() => MediaSource.isTypeSupported('video/mp4; codecs="hvc1.1.6.L93.B0"'));
      assert.equal(canDecode, false, 'this test expects a Chromium without HEVC decoding');
      const notice = page.locator('#notice');
      await notice.waitFor({ state: 'visible', timeout: 5000 });
      await sleep(3000);
      const text = await notice.textContent();
      assert.match(text, /This browser can't play HEVC \(H\.265\) video\./, text);
      assert.match(text, /ffplay http:\/\/\S+\/live\/hevc\.flv/, text);
      assert.match(await page.locator('#video-info').textContent(), /^HEVC \(H\.265\)/);
      assert.deepEqual(sockets.filter((u) => u.includes('/live/')), [], 'the stream was never opened');
      await screenshot(page, 'player-hevc');

      await page.goto(`${server.http}/`);
      const row = page.locator('tr[data-stream="hevc"]');
      await row.waitFor({ timeout: 5000 });
      assert.equal(await row.getAttribute('data-playable'), 'no');
      assert.equal(await row.locator('a.button').count(), 0, 'no Play button for HEVC');
      const opusRow = page.locator('tr[data-stream="opus"]');
      assert.equal(await opusRow.getAttribute('data-playable'), 'yes');
      assert.equal(await opusRow.locator('a.button.primary').count(), 1, 'Play for H.264 + Opus');
      assert.equal(await opusRow.locator('a.button', { hasText: 'flv.js' }).count(), 1, 'flv.js plays its video');
      await screenshot(page, 'index-codecs');
    } catch (err) {
      throw new Error(err.message + context_(logs));
    } finally {
      await context.close();
    }
  });
});
