// The cable speaks the protocol of the real ActionCable client, not just of our own Rust test
// client: the npm `@rails/actioncable` (the one turbo-rails bundles into the page) runs here in
// Node, signs in and subscribes as a browser would, and must receive the stream of a task that
// an ordinary form post adds.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { adapters, createConsumer } from '@rails/actioncable';
import WebSocket from 'ws';

import { attributeOf, httpSession, STREAM_TYPE, within } from './helpers.mjs';
import { startServer } from './server.mjs';

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

test(
  'The npm ActionCable client subscribes to a room and receives the stream of a task added by a form post',
  { timeout: 30_000 },
  async () => {
    const session = httpSession(server.url, { timeout: WAIT_MS });
    const { page } = session;

    const signedIn = await session.signIn('Katherine', { expectCookie: true });
    assert.equal(signedIn.headers.get('location'), '/rooms');

    // Create a room and open its page, as the browser would after the redirect.
    const roomPath = await session.createRoom('Launch window');
    const roomPage = await page(roomPath);
    const signedStreamName = attributeOf(
      roomPage,
      /<turbo-cable-stream-source\b[^>]*>/,
      'signed-stream-name',
    );

    // Node's WebSocket clients send neither cookies nor an Origin by themselves; the cable
    // needs both, as a browser tab on the app's own origin would send them.
    const socketErrors = [];
    const cookie = session.cookie();
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
    const posted = await session.post(`${roomPath}/tasks`, { 'task[title]': title }, {
      tokenFrom: roomPath,
      headers: { accept: `${STREAM_TYPE}, text/html, application/xhtml+xml` },
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
