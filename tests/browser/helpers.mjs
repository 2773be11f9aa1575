// Helpers the browser tests share: polling assertions for playwright-core (which has no
// auto-retrying `expect`), pages that keep their console errors for the test to assert on,
// signing in and creating rooms through the UI, and an HTTP session for clients that run in
// Node instead of a page. Not a test itself (node --test only picks up *.test.mjs).

import assert from 'node:assert/strict';
import { after, before } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import { launchBrowser, startServer } from './server.mjs';

/** Playwright's default is 30 s per action; a local page that takes more than a few is broken. */
export const ACTION_TIMEOUT = 5_000;
export const NAVIGATION_TIMEOUT = 10_000;
/** A stream answer, a broadcast or a presence frame (after its 100 ms flush) crosses one local
 * process; if it takes longer than this it is not coming. */
export const SETTLE_TIMEOUT = 5_000;
export const STREAM_TYPE = 'text/vnd.turbo-stream.html';
const SESSION_COOKIE = '_tasksync_session';

/**
 * Retries `check` (which throws, typically an assertion) until it passes or `timeout` runs out,
 * then rethrows its last error: what a stream, a broadcast or a presence frame changes lands
 * some time after whatever caused it, so assertions about it must poll.
 */
export async function eventually(check, { timeout = SETTLE_TIMEOUT, interval = 50 } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    try {
      return await check();
    } catch (err) {
      if (Date.now() >= deadline) throw err;
    }
    await sleep(interval);
  }
}

/** Whitespace-normalized text of the first element matching `locator`. */
export async function textOf(locator) {
  return (await locator.first().textContent({ timeout: ACTION_TIMEOUT })).replace(/\s+/g, ' ').trim();
}

export async function expectText(locator, expected) {
  await eventually(async () => assert.equal(await textOf(locator), expected));
}

export async function expectCount(locator, expected) {
  await eventually(async () => assert.equal(await locator.count(), expected));
}

export async function expectClass(locator, className, present) {
  await eventually(async () => {
    const classes = (await locator.getAttribute('class', { timeout: ACTION_TIMEOUT })).split(/\s+/);
    assert.equal(classes.includes(className), present, `class="${classes.join(' ')}"`);
  });
}

/**
 * A fresh context, closed by the test's own `after` even when the test fails. Playwright uses
 * the action timeout for navigations too unless told otherwise, so a test that wants that can
 * pass `navigationTimeout: ACTION_TIMEOUT`.
 */
export async function openContext(
  browser,
  t,
  contextOptions = {},
  { navigationTimeout = NAVIGATION_TIMEOUT } = {},
) {
  const context = await browser.newContext(contextOptions);
  t.after(() => context.close());
  context.setDefaultTimeout(ACTION_TIMEOUT);
  context.setDefaultNavigationTimeout(navigationTimeout);
  return context;
}

/** Collects `page`'s console errors and uncaught exceptions into `problems`, prefixed with
 * `label` when several pages share one list. */
export function collectProblems(page, problems, label) {
  const prefix = label ? `${label}: ` : '';
  page.on('pageerror', (err) => problems.push(`${prefix}uncaught: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error') problems.push(`${prefix}console: ${msg.text()} (${msg.location().url})`);
  });
  return problems;
}

/** A page in a fresh context (see `openContext`) whose problems the test asserts on. */
export async function openPage(browser, t, { label, contextOptions } = {}) {
  const context = await openContext(browser, t, contextOptions);
  const page = await context.newPage();
  const problems = collectProblems(page, [], label);
  return { context, page, problems };
}

/** Signs in through the form; leaves the page on the room list. */
export async function signIn(page, baseUrl, name) {
  await page.goto(`${baseUrl}/session/new`);
  await page.getByLabel('Your name').fill(name);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL((u) => u.pathname === '/rooms');
}

/** Creates a room from the room list through the form; leaves the page on it and returns its path. */
export async function createRoom(page, name) {
  await page.getByLabel('New room').fill(name);
  await page.getByRole('button', { name: 'Create room' }).click();
  await page.waitForURL((u) => /^\/rooms\/\d+$/.test(u.pathname));
  return new URL(page.url()).pathname;
}

/** Rejects with `what` when `promise` has not settled within `ms`. */
export async function within(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Carries the session cookie from response to response, as a browser would. The app rewrites
 * it on sign-in, so every answer must be looked at. */
function cookieJar() {
  let session = null;
  return {
    header: () => (session ? `${SESSION_COOKIE}=${session}` : ''),
    keep(res) {
      for (const line of res.headers.getSetCookie()) {
        const [pair] = line.split(';');
        const eq = pair.indexOf('=');
        if (pair.slice(0, eq).trim() === SESSION_COOKIE) session = pair.slice(eq + 1);
      }
      return res;
    },
    has: () => session !== null,
  };
}

/** The value of the first `attribute="..."` on a tag matching `tagPattern` in `html`. */
export function attributeOf(html, tagPattern, attribute) {
  const tag = html.match(tagPattern)?.[0];
  assert.ok(tag, `no tag matching ${tagPattern} in the page`);
  const value = tag.match(new RegExp(`\\s${attribute}="([^"]*)"`))?.[1];
  assert.ok(value, `no ${attribute} on ${tag}`);
  return value;
}

const csrfTokenOf = (html) => attributeOf(html, /<meta name="csrf-token"[^>]*>/, 'content');

/**
 * One person talking to the app over plain HTTP, the way a browser without JavaScript would:
 * the session cookie carried along, every form post with a CSRF token from a page. Redirects
 * are not followed, so a test sees the 303s. Without `timeout`, requests wait as long as the
 * test lets them (a restarting server may be slow to answer).
 */
export function httpSession(baseUrl, { timeout } = {}) {
  const jar = cookieJar();
  const http = async (path, { method = 'GET', form, headers = {} } = {}) => {
    const res = await fetch(`${baseUrl}${path}`, {
      method,
      redirect: 'manual',
      signal: timeout === undefined ? undefined : AbortSignal.timeout(timeout),
      headers: {
        ...(jar.has() ? { cookie: jar.header() } : {}),
        ...(form ? { 'content-type': 'application/x-www-form-urlencoded' } : {}),
        ...headers,
      },
      body: form ? new URLSearchParams(form) : undefined,
    });
    return jar.keep(res);
  };
  /** The body of `GET path`, which must answer 200. */
  const page = async (path) => {
    const res = await http(path);
    assert.equal(res.status, 200, `GET ${path} answered ${res.status}`);
    return res.text();
  };
  /** Posts `fields` to `path` with the token of the page at `tokenFrom`, as its form would. */
  const post = async (path, fields, { tokenFrom, headers } = {}) =>
    http(path, {
      method: 'POST',
      headers,
      form: { authenticity_token: csrfTokenOf(await page(tokenFrom)), ...fields },
    });

  return {
    http,
    page,
    post,
    /** The session cookie, for clients (WebSockets) that send none by themselves. */
    cookie: () => jar.header(),
    /** Signs in as `name`; `expectCookie` also checks the sign-in page started a session. */
    async signIn(name, { expectCookie = false } = {}) {
      const signInPage = await page('/session/new');
      if (expectCookie) assert.ok(jar.has(), 'GET /session/new set no session cookie');
      const res = await http('/session', {
        method: 'POST',
        form: { authenticity_token: csrfTokenOf(signInPage), name },
      });
      assert.equal(res.status, 303, `POST /session answered ${res.status}`);
      return res;
    },
    /** Creates a room named `name` from the room list; returns its path. */
    async createRoom(name) {
      const created = await post('/rooms', { 'room[name]': name }, { tokenFrom: '/rooms' });
      assert.equal(created.status, 303, `POST /rooms answered ${created.status}`);
      const roomPath = created.headers.get('location');
      assert.match(roomPath ?? '', /^\/rooms\/\d+$/);
      return roomPath;
    },
  };
}

/**
 * One tasksync server and one browser for all the tests of a file, started in `before` and
 * stopped in `after`; read `server` and `browser` from the returned object once `before` has run.
 */
export function withServerAndBrowser() {
  const env = {
    server: undefined,
    browser: undefined,
    /**
     * One step of a scenario. Steps build on each other, so they are not separate tests: the
     * first failure ends the scenario, named after the step it broke in. The server logs
     * warnings and errors only, so whatever it said is likely the cause.
     */
    async step(name, body) {
      try {
        return await body();
      } catch (err) {
        err.message = `${name}: ${err.message}`;
        const logs = env.server.logs().trim();
        if (logs) err.message += `\n--- tasksync output ---\n${logs}`;
        throw err;
      }
    },
  };
  before(async () => {
    env.server = await startServer();
    env.browser = await launchBrowser();
  }, { timeout: 45_000 });
  after(async () => {
    // Either may be missing when `before` failed half-way; close what exists, browser first so
    // its sockets do not log errors against a server that is already gone.
    await env.browser?.close();
    await env.server?.stop();
  });
  return env;
}
