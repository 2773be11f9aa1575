// The cable speaks the protocol of the real ActionCable client, not just of our own Rust test
// client: the npm `@rails/actioncable` (the one turbo-rails bundles into the page) runs here in
// Node, signs in and subscribes as a browser would, and must receive the stream of a task that
// an ordinary form post adds.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { adapters, createConsumer } from '@rails/actioncable';
import WebSocket from 'ws';

import { startServer } from './server.mjs';

const STREAM_TYPE = 'text/vnd.turbo-stream.html';
const SESSION_COOKIE = '_tasksync_session';
/** A local server answers in milliseconds; pings come every 3 s, so 5 s covers a slow start. */
const WAIT_MS = 5_000;

// ActionCable's ConnectionMonitor registers a `visibilitychange` listener on the global object
// (a browser's window) when it starts, and Node has no global addEventListener. The listener
// would only read `document` when that event fires, which never happens here, so no-ops suffice.
globalThis.addEventListener ??= () => {};
globalThis.removeEventListener ??= () => {};

let server;
let consumer;
let subscription;

before(async () => {
  server = await startServer();
}, { timeout: 30_000 });

after(async () => {
  // Unsubscribing first also cancels the client's resubscribe timer, so nothing keeps the
  // process alive when the subscription was never confirmed.
  subscription?.unsubscribe();
  consumer?.disconnect();
  await server?.stop();
});

/** Rejects with `what` when `promise` has not settled within `ms`. */
async function within(promise, ms, what) {
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
function attributeOf(html, tagPattern, attribute) {
  const tag = html.match(tagPattern)?.[0];
  assert.ok(tag, `no tag matching ${tagPattern} in the page`);
  const value = tag.match(new RegExp(`\\s${attribute}="([^"]*)"`))?.[1];
  assert.ok(value, `no ${attribute} on ${tag}`);
  return value;
}

const csrfTokenOf = (html) => attributeOf(html, /<meta name="csrf-token"[^>]*>/, 'content');

test(
  'The npm ActionCable client subscribes to a room and receives the stream of a task added by a form post',
  { timeout: 30_000 },
  async () => {
    const jar = cookieJar();
    const http = async (path, { method = 'GET', form, headers = {} } = {}) => {
      const res = await fetch(`${server.url}${path}`, {
        method,
        redirect: 'manual',
        signal: AbortSignal.timeout(WAIT_MS),
        headers: {
          ...(jar.has() ? { cookie: jar.header() } : {}),
          ...(form ? { 'content-type': 'application/x-www-form-urlencoded' } : {}),
          ...headers,
        },
        body: form ? new URLSearchParams(form) : undefined,
      });
      return jar.keep(res);
    };
    const page = async (path) => {
      const res = await http(path);
      assert.equal(res.status, 200, `GET ${path} answered ${res.status}`);
      return res.text();
    };

    // Sign in.
    const signInPage = await page('/session/new');
    assert.ok(jar.has(), 'GET /session/new set no session cookie');
    const signedIn = await http('/session', {
      method: 'POST',
      form: { authenticity_token: csrfTokenOf(signInPage), name: 'Katherine' },
    });
    assert.equal(signedIn.status, 303, `POST /session answered ${signedIn.status}`);
    assert.equal(signedIn.headers.get('location'), '/rooms');

    // Create a room and open its page, as the browser would after the redirect.
    const created = await http('/rooms', {
      method: 'POST',
      form: { authenticity_token: csrfTokenOf(await page('/rooms')), 'room[name]': 'Launch window' },
    });
    assert.equal(created.status, 303, `POST /rooms answered ${created.status}`);
    const roomPath = created.headers.get('location');
    assert.match(roomPath ?? '', /^\/rooms\/\d+$/);
    const roomPage = await page(roomPath);
    const signedStreamName = attributeOf(
      roomPage,
      /<turbo-cable-stream-source\b[^>]*>/,
      'signed-stream-name',
    );

    // Node's WebSocket clients send neither cookies nor an Origin by themselves; the cable
    // needs both, as a browser tab on the app's own origin would send them.
    const socketErrors = [];
    const cookie = jar.header();
    const origin = server.url;
    adapters.WebSocket = class extends WebSocket {
      constructor(url, protocols) {
        super(url, protocols, { headers: { cookie, origin } });
        // ActionCable only logs socket errors; keep them for the failure message.
        this.on('error', (err) => socketErrors.push(err.message));
      }
    };

    const received = [];
    let onConnected;
    let onMessage;
    const connected = new Promise((resolve) => {
      onConnected = resolve;
    });
    const firstMessage = new Promise((resolve) => {
      onMessage = resolve;
    });
    consumer = createConsumer(`${server.url.replace(/^http/, 'ws')}/cable`);
    subscription = consumer.subscriptions.create(
      { channel: 'Turbo::StreamsChannel', signed_stream_name: signedStreamName },
      {
        connected: () => onConnected(),
        received: (data) => {
          received.push(data);
          onMessage(data);
        },
        rejected: () => socketErrors.push('the subscription was rejected'),
      },
    );
    await within(connected, WAIT_MS, 'connected() was not called').catch((err) => {
      err.message += `; socket errors: ${JSON.stringify(socketErrors)}\n--- tasksync output ---\n${server.logs()}`;
      throw err;
    });

    // A fresh token from a page, as the room page's own form would carry after sign-in.
    const title = 'Check the fuel margins';
    const posted = await http(`${roomPath}/tasks`, {
      method: 'POST',
      headers: { accept: `${STREAM_TYPE}, text/html, application/xhtml+xml` },
      form: { authenticity_token: csrfTokenOf(await page(roomPath)), 'task[title]': title },
    });
    assert.equal(posted.status, 200, `POST ${roomPath}/tasks answered ${posted.status}`);
    assert.ok(
      (posted.headers.get('content-type') ?? '').startsWith(STREAM_TYPE),
      `the post was answered with ${posted.headers.get('content-type')}, not a stream`,
    );

    const data = await within(firstMessage, WAIT_MS, 'received() got no broadcast').catch((err) => {
      err.message += `\n--- tasksync output ---\n${server.logs()}`;
      throw err;
    });
    assert.equal(typeof data, 'string', `received() got ${JSON.stringify(data)}`);
    assert.ok(data.includes('<turbo-stream action="append" target="tasks">'), data);
    assert.ok(data.includes(title), data);
    assert.deepEqual(socketErrors, []);
  },
);
