// A page whose server restarts while someone else adds tasks must show every one of them
// afterwards, without anyone reloading it: the cable reconnects, resubscribes with the position
// the page was rendered at, and is replayed what it missed, or told to refresh when the history
// it knew is gone (a restarted single process starts a new one).

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import { launchBrowser, startServer } from './server.mjs';

const TIMEOUT = 5_000;
/** ActionCable reconnects with a backoff of a few seconds; the page converges after that. */
const CONVERGE_TIMEOUT = 20_000;

let server;
let browser;

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
}, { timeout: 45_000 });

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** Signs in over HTTP as a separate person and returns a function that adds a task. */
async function personOverHttp(base, name, room) {
  let cookie = '';
  const keepCookie = (res) => {
    const set = res.headers.get('set-cookie');
    if (set) cookie = set.split(';')[0];
  };
  const token = async () => {
    const res = await fetch(`${base}/session/new`, { headers: { cookie } });
    keepCookie(res);
    return (await res.text()).match(/name="csrf-token" content="([^"]+)"/)[1];
  };
  const post = async (path, fields) => {
    const body = new URLSearchParams({ authenticity_token: await token(), ...fields });
    const res = await fetch(`${base}${path}`, {
      method: 'POST',
      redirect: 'manual',
      headers: { cookie, 'content-type': 'application/x-www-form-urlencoded' },
      body,
    });
    keepCookie(res);
    return res;
  };
  const signedIn = await post('/session', { name });
  assert.equal(signedIn.status, 303);
  return async (title) => {
    const res = await post(`/rooms/${room}/tasks`, { 'task[title]': title });
    assert.equal(res.status, 303, `adding ${title}`);
  };
}

test('a page whose server restarts while someone adds tasks shows them all without a reload', async (t) => {
  const context = await browser.newContext();
  t.after(() => context.close());
  context.setDefaultTimeout(TIMEOUT);
  const page = await context.newPage();
  const loads = [];
  page.on('load', () => loads.push(page.url()));

  await page.goto(`${server.url}/session/new`);
  await page.getByLabel('Your name').fill('Ada');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL((u) => u.pathname === '/rooms');
  await page.getByLabel('New room').fill('Restart room');
  await page.getByRole('button', { name: 'Create room' }).click();
  await page.waitForURL((u) => /^\/rooms\/\d+$/.test(u.pathname));
  const room = new URL(page.url()).pathname.split('/').pop();
  await page.locator('turbo-cable-stream-source[connected]').waitFor({ state: 'attached' });
  const loadsBefore = loads.length;

  const grace = await personOverHttp(server.url, 'Grace', room);
  await grace('before the restart');
  await page.locator('#tasks .task', { hasText: 'before the restart' }).waitFor();

  await server.restart();
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
