// A page whose server restarts while someone else adds tasks must show every one of them
// afterwards, without anyone reloading it: the cable reconnects, resubscribes with the position
// the page was rendered at, and is replayed what it missed, or told to refresh when the history
// it knew is gone (a restarted single process starts a new one).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import {
  ACTION_TIMEOUT,
  createRoom,
  httpSession,
  openContext,
  signIn,
  withServerAndBrowser,
} from './helpers.mjs';

/** ActionCable reconnects with a backoff of a few seconds; the page converges after that. */
const CONVERGE_TIMEOUT = 20_000;

const env = withServerAndBrowser();

test('a page whose server restarts while someone adds tasks shows them all without a reload', async (t) => {
  const context = await openContext(env.browser, t, {}, { navigationTimeout: ACTION_TIMEOUT });
  const page = await context.newPage();
  const loads = [];
  page.on('load', () => loads.push(page.url()));

  await signIn(page, env.server.url, 'Ada');
  const roomPath = await createRoom(page, 'Restart room');
  await page.locator('turbo-cable-stream-source[connected]').waitFor({ state: 'attached' });
  const loadsBefore = loads.length;

  // Grace adds tasks over plain HTTP, as a separate person.
  const graceSession = httpSession(env.server.url);
  await graceSession.signIn('Grace');
  const grace = async (title) => {
    const res = await graceSession.post(`${roomPath}/tasks`, { 'task[title]': title }, {
      tokenFrom: '/session/new',
    });
    assert.equal(res.status, 303, `adding ${title}`);
  };
  await grace('before the restart');
  await page.locator('#tasks .task', { hasText: 'before the restart' }).waitFor();

  await env.server.restart();
  for (const title of ['after the restart 1', 'after the restart 2', 'after the restart 3']) {
    await grace(title);
  }

  const deadline = Date.now() + CONVERGE_TIMEOUT;
  for (;;) {
    const titles = await page.locator('#tasks .task__title').allTextContents();
    const want = ['before the restart', 'after the restart 1', 'after the restart 2', 'after the restart 3'];
    if (want.every((w) => titles.includes(w))) {
      assert.equal(new Set(titles).size, titles.length, `no task shows twice: ${titles}`);
      break;
    }
    assert.ok(Date.now() < deadline, `the page never caught up: ${titles}`);
    await sleep(200);
  }
  assert.equal(loads.length, loadsBefore, 'the page was not reloaded');
});
