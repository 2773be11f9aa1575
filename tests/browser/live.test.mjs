// Two people in one room, each in their own browser context (own session cookie, own socket):
// every change one makes must reach the other's open page through the cable, applied by
// turbo-rails in place, without that page reloading or fetching anything.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  ACTION_TIMEOUT,
  createRoom,
  eventually,
  expectClass,
  expectCount,
  expectText,
  openPage,
  signIn,
  STREAM_TYPE,
  withServerAndBrowser,
} from './helpers.mjs';

const env = withServerAndBrowser();
const { step } = env;

/**
 * A signed-in person in a fresh context. Collects console errors and uncaught exceptions, and
 * every request the page makes, so a test can tell a change that arrived over the socket from
 * one the page went and fetched.
 */
async function openPerson(t, name) {
  const { page, problems } = await openPage(env.browser, t, { label: name });
  const requests = [];
  page.on('request', (r) => requests.push(`${r.method()} ${new URL(r.url()).pathname}`));

  await signIn(page, env.server.url, name);
  await expectText(page.locator('.signout__who'), `Signed in as ${name}`);
  return { name, page, problems, requests };
}

/**
 * Waits until turbo-rails has its subscription confirmed (it sets `connected` then), and leaves
 * a marker on `window` that only this document has: a reload or a Turbo visit would lose it or
 * leave a trace in the counters.
 */
async function settleOnRoom(person) {
  const { page } = person;
  await page.locator('turbo-cable-stream-source[connected]').waitFor({ state: 'attached' });
  await page.evaluate(() => {
    window.__liveRoomMarker = 'loaded once';
    window.__turboVisits = [];
    document.addEventListener('turbo:visit', (e) => window.__turboVisits.push(e.detail.url));
  });
  person.loads = 0;
  page.on('load', () => person.loads++);
  person.requests.length = 0;
}

/** Runs `action` in `person`'s page and checks the post to `path` was answered with a stream,
 * so the sender's own page is not reloaded either. */
async function viaStream(person, path, action) {
  const [response] = await Promise.all([
    person.page.waitForResponse(
      (r) => r.request().method() === 'POST' && new URL(r.url()).pathname === path,
      { timeout: ACTION_TIMEOUT },
    ),
    action(),
  ]);
  assert.equal(response.status(), 200, `${person.name}: POST ${path} answered ${response.status()}`);
  const type = response.headers()['content-type'] ?? '';
  assert.ok(type.startsWith(STREAM_TYPE), `${person.name}: POST ${path} was answered with ${type}`);
}

/** Adds a task from `person`'s page and waits for the stream answer to land there: the answer
 * replaces the form, so typing the next title before that would be typed into a form about to
 * be swapped for an empty one. */
async function addTask(person, roomPath, title) {
  const { page } = person;
  await page.getByLabel('New task').fill(title);
  await viaStream(person, `${roomPath}/tasks`, () => page.getByRole('button', { name: 'Add task' }).click());
  await expectCount(taskTitled(page, title), 1);
  await eventually(async () => assert.equal(await page.getByLabel('New task').inputValue(), ''));
}

/** A task in `page` by its exact title (the hidden labels repeat titles after a prefix). */
function taskTitled(page, title) {
  return page.locator('#tasks > .task').filter({ has: page.getByText(title, { exact: true }) });
}

test(
  'Every change one person makes in a room appears on the other person\'s open room page, without a reload',
  { timeout: 120_000 },
  async (t) => {
    const ada = await openPerson(t, 'Ada');
    const grace = await openPerson(t, 'Grace');

    const roomPath = await createRoom(ada.page, 'Conference');
    const roomId = roomPath.split('/').pop();
    await grace.page.goto(`${env.server.url}${roomPath}`);
    await expectText(grace.page.getByRole('heading', { level: 1 }), 'Conference');

    await step('both pages subscribe to the room', async () => {
      await settleOnRoom(ada);
      await settleOnRoom(grace);
    });

    const counts = (person) => person.page.locator(`#counts_room_${roomId}`);
    const taskPath = (id) => `${roomPath}/tasks/${id.replace('task_', '')}`;
    let taskId;

    await step('a task Ada adds appears for Grace', async () => {
      await addTask(ada, roomPath, 'Book the venue');
      const task = taskTitled(grace.page, 'Book the venue');
      await expectCount(task, 1);
      taskId = await task.getAttribute('id');
      await expectText(counts(grace), '1 open · 0 done');
      await expectText(grace.page.locator(`#${taskId} .task__meta`), 'Last changed by Ada');
    });

    await step('Grace\'s edit of the title updates it for Ada', async () => {
      const task = grace.page.locator(`#${taskId}`);
      await task.locator('summary', { hasText: 'Edit' }).click();
      await task.getByLabel('Title').fill('Book the venue for Friday');
      await viaStream(grace, taskPath(taskId), () => task.getByRole('button', { name: 'Save' }).click());
      const seen = ada.page.locator(`#${taskId}`);
      await expectText(seen.locator('.task__title'), 'Book the venue for Friday');
      await expectText(seen.locator('.task__meta'), 'Last changed by Grace');
    });

    await step('Ada marking it done shows it done, with new counts, for Grace', async () => {
      const task = ada.page.locator(`#${taskId}`);
      await viaStream(ada, taskPath(taskId), () =>
        task.getByRole('button', { name: /^Mark as done/ }).click());
      const seen = grace.page.locator(`#${taskId}`);
      await expectClass(seen, 'task--done', true);
      await eventually(async () =>
        assert.equal(await seen.locator('button.check').getAttribute('aria-pressed'), 'true'));
      await expectText(counts(grace), '0 open · 1 done');
    });

    await step('Grace deleting it removes it for Ada', async () => {
      const task = grace.page.locator(`#${taskId}`);
      await viaStream(grace, taskPath(taskId), () => task.getByRole('button', { name: /^Delete/ }).click());
      await expectCount(ada.page.locator(`#${taskId}`), 0);
      await expectCount(ada.page.locator('#tasks > .task'), 0);
      await expectText(counts(ada), '0 open · 0 done');
    });

    await step('Ada renaming the room changes Grace\'s header', async () => {
      const header = ada.page.locator(`#room_${roomId}`);
      await header.locator('summary', { hasText: 'Rename' }).click();
      await header.getByLabel('Room name').fill('Conference 2026');
      await viaStream(ada, roomPath, () => header.getByRole('button', { name: 'Save' }).click());
      await expectText(grace.page.locator(`#room_${roomId} h1`), 'Conference 2026');
    });

    await step('"Clear completed" by Ada removes the done tasks for Grace', async () => {
      await addTask(grace, roomPath, 'Print the badges');
      await addTask(grace, roomPath, 'Order the coffee');
      const badges = taskTitled(grace.page, 'Print the badges');
      const coffee = taskTitled(grace.page, 'Order the coffee');
      const badgesId = await badges.getAttribute('id');
      await viaStream(grace, taskPath(badgesId), () =>
        badges.getByRole('button', { name: /^Mark as done/ }).click());
      // Ada must have both tasks, the first one done, before she clears.
      await expectClass(ada.page.locator(`#${badgesId}`), 'task--done', true);
      await expectCount(taskTitled(ada.page, 'Order the coffee'), 1);
      await expectText(counts(ada), '1 open · 1 done');

      await viaStream(ada, `${roomPath}/tasks/completed`, () =>
        ada.page.getByRole('button', { name: 'Clear completed' }).click());
      await expectCount(grace.page.locator(`#${badgesId}`), 0);
      await expectCount(coffee, 1);
      await expectCount(grace.page.locator('#tasks > .task'), 1);
      await expectText(counts(grace), '1 open · 0 done');
    });

    for (const person of [ada, grace]) {
      const { name, page } = person;
      assert.equal(await page.evaluate(() => window.__liveRoomMarker), 'loaded once', `${name}'s page was reloaded`);
      assert.deepEqual(await page.evaluate(() => window.__turboVisits), [], `${name}'s page made a Turbo visit`);
      assert.equal(person.loads, 0, `a document was loaded in ${name}'s page`);
      assert.equal(new URL(page.url()).pathname, roomPath);
      // Only the posts this person sent: what the other person did reached the page over the
      // socket, not through a fetch (a Turbo refresh or a frame reload would show up here).
      const fetched = person.requests.filter((r) => !r.startsWith('POST '));
      assert.deepEqual(fetched, [], `${name}'s page fetched something`);
    }
    assert.deepEqual([...ada.problems, ...grace.problems], [], 'a page logged errors');
  },
);
