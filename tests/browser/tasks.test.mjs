// The task lifecycle in a real browser, twice: once with Turbo applying stream responses in place,
// and once with JavaScript off, where the same forms must work as plain posts and redirects.
// One server and one browser serve both tests; each test gets its own context, so its own
// session cookie and its own room.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  ACTION_TIMEOUT,
  createRoom,
  eventually,
  expectClass,
  expectCount,
  expectText,
  NAVIGATION_TIMEOUT,
  openPage,
  signIn,
  STREAM_TYPE,
  withServerAndBrowser,
} from './helpers.mjs';

const env = withServerAndBrowser();
const { step } = env;

/** Signs in and creates a room; leaves the page on that room and returns its path. */
async function signInAndCreateRoom(page, name, roomName) {
  await signIn(page, env.server.url, name);
  await expectText(page.locator('.signout__who'), `Signed in as ${name}`);

  const roomPath = await createRoom(page, roomName);
  await expectText(page.getByRole('heading', { level: 1 }), roomName);
  return roomPath;
}

/** The id (`task_7`) of the only task whose title is `title`. */
async function taskId(page, title) {
  // Exact text matches the title paragraph only, not the hidden "Mark as done: title" labels.
  const task = page.locator('#tasks > .task').filter({ has: page.getByText(title, { exact: true }) });
  await expectCount(task, 1);
  return task.getAttribute('id');
}

test(
  'With JavaScript, Turbo adds, edits, completes, reopens, clears and deletes tasks in place without reloading the page',
  { timeout: 90_000 },
  async (t) => {
    const { page, problems } = await openPage(env.browser, t);
    const roomPath = await signInAndCreateRoom(page, 'Grace', 'Groceries');
    const roomId = roomPath.split('/').pop();
    const counts = page.locator(`#counts_room_${roomId}`);
    assert.equal(await page.evaluate(() => typeof window.Turbo), 'object', 'Turbo did not load');

    // Everything from here on must happen inside this one document. A full load would wipe the
    // marker; a Turbo Drive visit (a redirect answer instead of a stream) would fire turbo:visit.
    await page.evaluate(() => {
      window.__roomPageMarker = 'loaded once';
      window.__turboVisits = [];
      document.addEventListener('turbo:visit', (e) => window.__turboVisits.push(e.detail.url));
    });
    let documentLoads = 0;
    page.on('load', () => documentLoads++);

    /** Runs `action` and waits for the Turbo Stream answer to a form post to `path`. */
    async function viaStream(path, action) {
      const [response] = await Promise.all([
        page.waitForResponse(
          (r) => r.request().method() === 'POST' && new URL(r.url()).pathname === path,
          { timeout: ACTION_TIMEOUT },
        ),
        action(),
      ]);
      assert.equal(response.status(), 200, `POST ${path} answered ${response.status()}`);
      const type = response.headers()['content-type'] ?? '';
      assert.ok(type.startsWith(STREAM_TYPE), `POST ${path} was answered with ${type}, not a stream`);
      return response;
    }

    await step('adding a task appends it, updates the counts and clears the form', async () => {
      await page.getByLabel('New task').fill('Buy oat milk');
      await viaStream(`${roomPath}/tasks`, () => page.getByRole('button', { name: 'Add task' }).click());
      await expectCount(page.locator('#tasks > .task'), 1);
      await expectText(counts, '1 open · 0 done');
      await eventually(async () => assert.equal(await page.getByLabel('New task').inputValue(), ''));
    });

    const firstId = await taskId(page, 'Buy oat milk');
    const first = page.locator(`#${firstId}`);
    const firstPath = `${roomPath}/tasks/${firstId.replace('task_', '')}`;

    await step('editing replaces the task with its new title and notes', async () => {
      await first.locator('summary', { hasText: 'Edit' }).click();
      await first.getByLabel('Title').fill('Buy oat milk (2 cartons)');
      await first.getByLabel('Notes').fill('The barista kind, not the light one.');
      await viaStream(firstPath, () => first.getByRole('button', { name: 'Save' }).click());
      await expectText(first.locator('.task__title'), 'Buy oat milk (2 cartons)');
      await expectText(first.locator('.task__notes'), 'The barista kind, not the light one.');
      await expectText(first.locator('.task__meta'), 'Last changed by Grace');
    });

    await step('the check button marks the task done and back', async () => {
      const check = first.locator('button.check');
      await viaStream(firstPath, () => first.getByRole('button', { name: /^Mark as done/ }).click());
      await expectClass(first, 'task--done', true);
      await eventually(async () => assert.equal(await check.getAttribute('aria-pressed'), 'true'));
      await expectText(counts, '0 open · 1 done');

      await viaStream(firstPath, () => first.getByRole('button', { name: /^Mark as not done/ }).click());
      await expectClass(first, 'task--done', false);
      await eventually(async () => assert.equal(await check.getAttribute('aria-pressed'), 'false'));
      await expectText(counts, '1 open · 0 done');
    });

    await step('"Clear completed" removes only the done tasks', async () => {
      await page.getByLabel('New task').fill('Return the library books');
      await viaStream(`${roomPath}/tasks`, () => page.getByRole('button', { name: 'Add task' }).click());
      await expectText(counts, '2 open · 0 done');
      const secondId = await taskId(page, 'Return the library books');
      const second = page.locator(`#${secondId}`);
      await viaStream(`${roomPath}/tasks/${secondId.replace('task_', '')}`, () =>
        second.getByRole('button', { name: /^Mark as done/ }).click());
      await expectClass(second, 'task--done', true);
      await expectText(counts, '1 open · 1 done');

      await viaStream(`${roomPath}/tasks/completed`, () =>
        page.getByRole('button', { name: 'Clear completed' }).click());
      await expectCount(second, 0);
      await expectCount(first, 1);
      await expectText(counts, '1 open · 0 done');
    });

    await step('deleting removes the task and updates the counts', async () => {
      await viaStream(firstPath, () => first.getByRole('button', { name: /^Delete/ }).click());
      await expectCount(first, 0);
      await expectCount(page.locator('#tasks > .task'), 0);
      await expectText(counts, '0 open · 0 done');
    });

    const marker = await page.evaluate(() => window.__roomPageMarker);
    assert.equal(marker, 'loaded once', 'the room page was reloaded');
    const visits = await page.evaluate(() => window.__turboVisits);
    assert.deepEqual(visits, [], 'Turbo visited a page instead of applying a stream');
    assert.equal(documentLoads, 0, 'a document was loaded after the room page');
    assert.equal(new URL(page.url()).pathname, roomPath);
    assert.deepEqual(problems, [], 'the page logged errors');
  },
);

test(
  'With JavaScript disabled, the same forms add, edit, complete, clear and delete tasks through posts and redirects',
  { timeout: 90_000 },
  async (t) => {
    const { page, problems } = await openPage(env.browser, t, { contextOptions: { javaScriptEnabled: false } });
    const roomPath = await signInAndCreateRoom(page, 'Lin', 'Move house');
    const roomId = roomPath.split('/').pop();
    const counts = page.locator(`#counts_room_${roomId}`);

    /**
     * Runs `action`, checks the browser posted a plain form (no stream asked for) and was sent
     * back to the room with a 303, and waits for the room page to load again.
     */
    async function postAndReturn(action) {
      // The room page posts back to itself, so its URL says nothing; the load event of the new
      // document is what shows the redirect was followed.
      const [response] = await Promise.all([
        page.waitForResponse((r) => r.request().method() === 'POST', { timeout: ACTION_TIMEOUT }),
        page.waitForEvent('load', { timeout: NAVIGATION_TIMEOUT }),
        action(),
      ]);
      const path = new URL(response.url()).pathname;
      assert.equal(response.status(), 303, `POST ${path} answered ${response.status()}`);
      assert.equal(response.headers().location, roomPath);
      const accept = (await response.request().allHeaders()).accept ?? '';
      assert.ok(!accept.includes(STREAM_TYPE), `a plain form post asked for a stream: ${accept}`);
      assert.equal(new URL(page.url()).pathname, roomPath);
    }

    await step('adding a task shows it on the reloaded room page', async () => {
      await page.getByLabel('New task').fill('Pack the kitchen');
      await page.locator('summary', { hasText: 'Add notes' }).click();
      await page.locator('#new_task').getByLabel('Notes').fill('Plates go in the padded box.');
      await postAndReturn(() => page.getByRole('button', { name: 'Add task' }).click());
      await expectCount(page.locator('#tasks > .task'), 1);
      await expectText(page.locator('#tasks .task__title'), 'Pack the kitchen');
      await expectText(page.locator('#tasks .task__notes'), 'Plates go in the padded box.');
      await expectText(counts, '1 open · 0 done');
      assert.equal(await page.getByLabel('New task').inputValue(), '');
    });

    const firstId = await taskId(page, 'Pack the kitchen');
    const first = page.locator(`#${firstId}`);

    await step('editing saves the new title and notes', async () => {
      await first.locator('summary', { hasText: 'Edit' }).click();
      await first.getByLabel('Title').fill('Pack the kitchen and pantry');
      await first.getByLabel('Notes').fill('Plates in the padded box; tins in the crate.');
      await postAndReturn(() => first.getByRole('button', { name: 'Save' }).click());
      await expectText(first.locator('.task__title'), 'Pack the kitchen and pantry');
      await expectText(first.locator('.task__notes'), 'Plates in the padded box; tins in the crate.');
      await expectText(first.locator('.task__meta'), 'Last changed by Lin');
    });

    await step('the check button marks the task done and back', async () => {
      await postAndReturn(() => first.getByRole('button', { name: /^Mark as done/ }).click());
      await expectClass(first, 'task--done', true);
      assert.equal(await first.locator('button.check').getAttribute('aria-pressed'), 'true');
      await expectText(counts, '0 open · 1 done');

      await postAndReturn(() => first.getByRole('button', { name: /^Mark as not done/ }).click());
      await expectClass(first, 'task--done', false);
      assert.equal(await first.locator('button.check').getAttribute('aria-pressed'), 'false');
      await expectText(counts, '1 open · 0 done');
    });

    await step('"Clear completed" removes only the done tasks', async () => {
      await page.getByLabel('New task').fill('Cancel the internet contract');
      await postAndReturn(() => page.getByRole('button', { name: 'Add task' }).click());
      const secondId = await taskId(page, 'Cancel the internet contract');
      const second = page.locator(`#${secondId}`);
      await postAndReturn(() => second.getByRole('button', { name: /^Mark as done/ }).click());
      await expectClass(second, 'task--done', true);
      await expectText(counts, '1 open · 1 done');

      await postAndReturn(() => page.getByRole('button', { name: 'Clear completed' }).click());
      await expectCount(second, 0);
      await expectCount(first, 1);
      await expectText(counts, '1 open · 0 done');
    });

    await step('deleting removes the task', async () => {
      await postAndReturn(() => first.getByRole('button', { name: /^Delete/ }).click());
      await expectCount(page.locator('#tasks > .task'), 0);
      await expectText(counts, '0 open · 0 done');
    });

    assert.deepEqual(problems, [], 'the page logged errors');
  },
);
