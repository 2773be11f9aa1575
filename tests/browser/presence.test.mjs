// The room page's presence widget, seen by two people in their own browser contexts (own
// session, own presence socket): who is here, who is typing, and who has left, all arriving over
// /rooms/N/presence without the page reloading. Each test makes its own room, so what one test
// leaves behind on the shared server never shows up in another's list.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import {
  ACTION_TIMEOUT,
  collectProblems,
  createRoom,
  eventually,
  openContext,
  signIn,
  withServerAndBrowser,
} from './helpers.mjs';

/** The widget says "stopped" after 3 s of quiet and the server expires an indicator 5 s after the
 * last "typing"; either way it must be gone well within this. */
const TYPING_CLEARS_WITHIN = 10_000;
/** Longer than a presence heartbeat (2 s) plus many flushes: if the server were going to drop
 * someone because one of their tabs closed, it would have done so by then. */
const STILL_LISTED_FOR = 3_000;

const PEOPLE_LIST = 'presence-list .presence__people';
const PEOPLE = `${PEOPLE_LIST} > li`;
const TYPING = 'presence-list .presence__typing[aria-live="polite"]';
const GRACE_TYPING = 'Grace is typing…';

const env = withServerAndBrowser();
const { step } = env;

const peopleIn = (page) => page.locator(PEOPLE).allTextContents();

async function expectPeople(page, expected, options) {
  await eventually(async () => assert.deepEqual(await peopleIn(page), expected), options);
}

const typingIn = (page) => page.locator(TYPING).textContent({ timeout: ACTION_TIMEOUT });

async function expectTyping(page, expected, options) {
  await eventually(async () => assert.equal(await typingIn(page), expected), options);
}

/**
 * Collects a page's console errors and uncaught exceptions into `problems`, and counts the
 * presence sockets it opens: more than one means the socket dropped and the widget reconnected,
 * which would hide a server that closes sockets it should keep.
 */
function watch(page, label, problems) {
  collectProblems(page, problems, label);
  const watched = { page, label, presenceSockets: 0 };
  page.on('websocket', (ws) => {
    if (/^\/rooms\/\d+\/presence$/.test(new URL(ws.url()).pathname)) watched.presenceSockets++;
  });
  return watched;
}

/** A signed-in person in a fresh context, closed by the test's own `after` even on failure. */
async function openPerson(t, name) {
  const context = await openContext(env.browser, t);
  const problems = [];
  const tab = watch(await context.newPage(), name, problems);
  const { page } = tab;

  await signIn(page, env.server.url, name);
  return { name, context, page, tab, tabs: [tab], problems };
}

/** Another tab of the same person: same context, so same session and same user. */
async function openAnotherTab(person, roomPath) {
  const label = `${person.name} (tab ${person.tabs.length + 1})`;
  const tab = watch(await person.context.newPage(), label, person.problems);
  person.tabs.push(tab);
  await tab.page.goto(`${env.server.url}${roomPath}`);
  return tab;
}

/**
 * Records every state an element goes through, with the page's clock, from now on. Polling
 * could miss a flicker between two polls; a MutationObserver cannot.
 */
async function record(page, selector, what) {
  await page.evaluate(({ selector, what }) => {
    const el = document.querySelector(selector);
    const read = what === 'names' ? () => Array.from(el.children, (li) => li.textContent) : () => el.textContent;
    const log = [{ at: Date.now(), value: read() }];
    (window.__presenceRecords ??= {})[selector] = log;
    new MutationObserver(() => log.push({ at: Date.now(), value: read() }))
      .observe(el, { childList: true, characterData: true, subtree: true });
  }, { selector, what });
  return () => page.evaluate((selector) => window.__presenceRecords[selector], selector);
}

/** Leaves a marker on `window` that a reload or a Turbo visit would lose or leave a trace of. */
async function markDocument(page) {
  await page.evaluate(() => {
    window.__presenceMarker = 'loaded once';
    window.__turboVisits = [];
    document.addEventListener('turbo:visit', (e) => window.__turboVisits.push(e.detail.url));
  });
  const loads = { count: 0 };
  page.on('load', () => loads.count++);
  return async () => {
    assert.equal(await page.evaluate(() => window.__presenceMarker), 'loaded once', 'the page was reloaded');
    assert.deepEqual(await page.evaluate(() => window.__turboVisits), [], 'the page made a Turbo visit');
    assert.equal(loads.count, 0, 'a document was loaded in the page');
  };
}

/** The server's own count of open presence sockets, from its health check. */
async function presenceConnections() {
  const res = await fetch(`${env.server.url}/up`, { signal: AbortSignal.timeout(ACTION_TIMEOUT) });
  return (await res.json()).presence.connections;
}

async function expectPresenceConnections(expected) {
  await eventually(async () =>
    assert.equal(await presenceConnections(), expected, 'presence sockets the server counts'));
}

function assertNoProblems(...people) {
  assert.deepEqual(people.flatMap((p) => p.problems), [], 'a page logged errors');
  for (const { label, presenceSockets } of people.flatMap((p) => p.tabs)) {
    assert.equal(presenceSockets, 1, `${label}'s page opened the presence socket ${presenceSockets} times`);
  }
}

test(
  'Two people in the same room each see themselves and the other in the presence list, without reloading',
  { timeout: 60_000 },
  async (t) => {
    const ada = await openPerson(t, 'Ada');
    const grace = await openPerson(t, 'Grace');
    const roomPath = await createRoom(ada.page, 'Standup');

    const adaNotReloaded = await step('Ada alone sees herself', async () => {
      await expectPeople(ada.page, ['Ada']);
      return markDocument(ada.page);
    });

    await step('Grace opening the room sees both of them', async () => {
      await grace.page.goto(`${env.server.url}${roomPath}`);
      await expectPeople(grace.page, ['Ada', 'Grace']);
    });

    await step('Ada\'s open page adds Grace in place', async () => {
      await expectPeople(ada.page, ['Ada', 'Grace']);
      await adaNotReloaded();
      assert.equal(new URL(ada.page.url()).pathname, roomPath);
    });

    assertNoProblems(ada, grace);
  },
);

test(
  'Typing in one person\'s page shows "is typing…" on the other\'s page only, and it goes away by itself a few seconds after the typing stops',
  { timeout: 60_000 },
  async (t) => {
    const ada = await openPerson(t, 'Ada');
    const grace = await openPerson(t, 'Grace');
    const roomPath = await createRoom(ada.page, 'Planning');
    await grace.page.goto(`${env.server.url}${roomPath}`);

    await step('both are in the room', async () => {
      await expectPeople(ada.page, ['Ada', 'Grace']);
      await expectPeople(grace.page, ['Ada', 'Grace']);
      await expectTyping(ada.page, '');
    });

    const adaSaw = await record(ada.page, TYPING, 'text');
    const graceSaw = await record(grace.page, TYPING, 'text');
    await grace.page.evaluate(() =>
      document.addEventListener('input', () => (window.__lastInputAt = Date.now())));

    const title = 'Print the badges for Friday';
    await step('Grace typing a title shows the indicator to Ada', async () => {
      // Slow enough (~5.5 s) to outlast the server's 5 s expiry of a single "typing": the
      // indicator must be kept alive by the widget repeating it, not just shown once.
      await Promise.all([
        grace.page.getByLabel('New task').pressSequentially(title, { delay: 200, timeout: 20_000 }),
        expectTyping(ada.page, GRACE_TYPING),
      ]);
    });

    const lastInputAt = await grace.page.evaluate(() => window.__lastInputAt);
    await step('the indicator goes away by itself once Grace stops', async () => {
      await expectTyping(ada.page, '', { timeout: TYPING_CLEARS_WITHIN });
    });

    await step('Ada\'s indicator stayed up all the while Grace typed', async () => {
      const seen = await adaSaw();
      const shown = seen.findIndex((s) => s.value === GRACE_TYPING);
      assert.ok(shown >= 0, `never shown: ${JSON.stringify(seen)}`);
      const cleared = seen.findIndex((s, i) => i > shown && s.value !== GRACE_TYPING);
      assert.ok(cleared > shown, `never cleared: ${JSON.stringify(seen)}`);
      assert.equal(seen[cleared].value, '', `changed to something else: ${JSON.stringify(seen)}`);
      const quiet = seen[cleared].at - lastInputAt;
      // Gone during or right after the typing would mean the widget or the server stops too soon.
      assert.ok(quiet >= 1_000, `cleared ${quiet} ms after Grace's last keystroke: ${JSON.stringify(seen)}`);
      assert.ok(quiet <= TYPING_CLEARS_WITHIN, `cleared ${quiet} ms after Grace's last keystroke`);
      t.diagnostic(`"${GRACE_TYPING}" showed on Ada's page for ${seen[cleared].at - seen[shown].at} ms ` +
        `and cleared ${quiet} ms after Grace's last keystroke`);
    });

    await step('Grace never saw her own typing', async () => {
      const seen = await graceSaw();
      assert.deepEqual(seen.filter((s) => s.value !== ''), [], 'Grace\'s own indicator showed text');
      assert.equal(await typingIn(grace.page), '');
    });

    await step('nothing was submitted', async () => {
      assert.equal(await grace.page.getByLabel('New task').inputValue(), title);
      assert.equal(await ada.page.locator('#tasks > .task').count(), 0);
      assert.equal(await grace.page.locator('#tasks > .task').count(), 0);
    });

    assertNoProblems(ada, grace);
  },
);

test(
  'Closing a page removes its person from the others\' lists within seconds, and someone with two tabs open is listed once and stays while one tab remains',
  { timeout: 60_000 },
  async (t) => {
    const ada = await openPerson(t, 'Ada');
    const grace = await openPerson(t, 'Grace');
    const roomPath = await createRoom(ada.page, 'Retro');
    await grace.page.goto(`${env.server.url}${roomPath}`);

    await step('both are in the room', async () => {
      await expectPeople(ada.page, ['Ada', 'Grace']);
      await expectPeople(grace.page, ['Ada', 'Grace']);
      // Earlier tests' contexts are closed by now; once the server has seen them go, the counts
      // below are this room's sockets alone.
      await expectPresenceConnections(2);
    });

    const graceSaw = await record(grace.page, PEOPLE_LIST, 'names');
    const adaSaw = await record(ada.page, PEOPLE_LIST, 'names');
    const both = ['Ada', 'Grace'];
    const alwaysBoth = async (saw, who) => {
      const seen = await saw();
      const wrong = seen.filter((s) => JSON.stringify(s.value) !== JSON.stringify(both));
      assert.deepEqual(wrong, [], `${who}'s list was not exactly Ada and Grace at some point`);
    };

    const adaTab2 = await step('Ada opening a second tab is listed once', async () => {
      const tab = await openAnotherTab(ada, roomPath);
      await expectPeople(tab.page, both);
      await expectPresenceConnections(3);
      // Past a few flushes, so a second "join" for Ada would have reached the lists.
      await sleep(500);
      for (const page of [ada.page, grace.page, tab.page]) assert.deepEqual(await peopleIn(page), both);
      await alwaysBoth(graceSaw, 'Grace');
      await alwaysBoth(adaSaw, 'Ada');
      return tab;
    });

    await step('Ada closing one of her tabs leaves her listed', async () => {
      await adaTab2.page.close();
      // Only once the server has dropped that socket does watching for a wrong "leave" mean much.
      await expectPresenceConnections(2);
      await sleep(STILL_LISTED_FOR);
      await alwaysBoth(graceSaw, 'Grace');
      await alwaysBoth(adaSaw, 'Ada');
    });

    await step('Grace closing her page leaves Ada alone in Ada\'s list', async () => {
      const closedAt = Date.now();
      await grace.page.close();
      await expectPeople(ada.page, ['Ada']);
      t.diagnostic(`Grace left Ada's list ${Date.now() - closedAt} ms after her page closed`);
      await expectPresenceConnections(1);
    });

    assertNoProblems(ada, grace);
  },
);
