// The cable speaks AnyCable's extended protocol to the real `@anycable/web` client: it runs
// here in Node, subscribes to a room's signed stream as a page would, receives a task that an
// ordinary form post adds, and after its network drops and comes back it gets the tasks added
// meanwhile through its own history request, in order and once.

import assert from 'node:assert/strict';
import { inspect } from 'node:util';
import { after, before, test } from 'node:test';

import { BaseLogger } from '@anycable/core';
import { createCable } from '@anycable/web';
import WebSocket from 'ws';

import { attributeOf, httpSession, STREAM_TYPE, within } from './helpers.mjs';
import { startServer } from './server.mjs';

/** A local server answers in milliseconds; pings come every 3 s, so 5 s covers a slow start. */
const WAIT_MS = 5_000;

let server;
let cable;

before(async () => {
  server = await startServer();
}, { timeout: 30_000 });

after(async () => {
  cable?.disconnect();
  await server?.stop();
});

/** Resolves once `condition()` holds, or rejects with `what` after `ms`. */
async function eventually(condition, ms, what) {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`${what} within ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** The title of the task a Turbo Stream appends. */
const titleOf = (html) => html.match(/<p class="task__title">([^<]*)</)?.[1];

/** Keeps what the client logs, for assertions and failure messages. */
class KeptLogger extends BaseLogger {
  constructor() {
    super('info');
    this.entries = [];
  }

  writeLogEntry(level, msg, details) {
    this.entries.push({ level, line: `${level}: ${msg}${details ? ` ${inspect(details, { depth: 3 })}` : ''}` });
  }
}

test(
  'The @anycable/web client receives a room\'s stream with positions and catches up through history after a reconnect',
  { timeout: 60_000 },
  async () => {
    const session = httpSession(server.url, { timeout: WAIT_MS });

    // Sign in, create a room and open its page, as a browser would.
    await session.signIn('Dorothy');
    const roomPath = await session.createRoom('Orbit');
    const signedStreamName = attributeOf(
      await session.page(roomPath),
      /<turbo-cable-stream-source\b[^>]*>/,
      'signed-stream-name',
    );
    const addTask = async (title) => {
      const res = await session.post(`${roomPath}/tasks`, { 'task[title]': title }, {
        tokenFrom: roomPath,
        headers: { accept: `${STREAM_TYPE}, text/html, application/xhtml+xml` },
      });
      assert.equal(res.status, 200, `POST ${roomPath}/tasks answered ${res.status}`);
    };

    // Node's WebSocket clients send neither cookies nor an Origin by themselves; the cable
    // needs both, as a browser tab on the app's own origin would send them. While `offline`,
    // the client's reconnects go to a port nobody listens on, as when the network is down.
    const socketErrors = [];
    const sockets = [];
    let offline = false;
    class BrowserLikeWebSocket extends WebSocket {
      constructor(url, protocols, options) {
        const target = new URL(url);
        if (offline) target.port = '1';
        super(target.href, protocols, options);
        this.on('error', (err) => {
          if (!offline) socketErrors.push(err.message);
        });
        sockets.push(this);
      }
    }

    const logger = new KeptLogger();
    const diagnostics = () =>
      `; socket errors: ${JSON.stringify(socketErrors)}\n--- client log ---\n` +
      `${logger.entries.map((e) => e.line).join('\n')}\n--- tasksync output ---\n${server.logs()}`;
    cable = createCable(`${server.url.replace(/^http/, 'ws')}/cable`, {
      protocol: 'actioncable-v1-ext-json',
      websocketImplementation: BrowserLikeWebSocket,
      websocketOptions: {
        headers: { cookie: session.cookie(), origin: server.url },
        // A browser dispatches each message as a task of its own; `ws` by default emits all the
        // messages of one TCP read at once, before the client's promise for the confirmation
        // has settled, and the client drops a `confirm_history` that comes with it.
        allowSynchronousEvents: false,
      },
      logger,
      // Retry quickly, so the test waits for the network, not for a backoff.
      reconnectStrategy: () => 100,
    });

    const messages = [];
    const infos = [];
    const waitFor = async (condition, what) => {
      try {
        await eventually(condition, WAIT_MS, what);
      } catch (err) {
        err.message += `; received ${inspect(messages)}; infos ${inspect(infos)}${diagnostics()}`;
        throw err;
      }
    };
    const connects = [];
    cable.on('connect', (event) => connects.push(event));

    const channel = cable.subscribeTo('Turbo::StreamsChannel', {
      signed_stream_name: signedStreamName,
    });
    channel.on('message', (message, meta) => messages.push({ title: titleOf(message), meta }));
    channel.on('info', (info) => infos.push(info.type));
    await within(channel.ensureSubscribed(), WAIT_MS, 'the subscription was not confirmed').catch(
      (err) => {
        err.message += diagnostics();
        throw err;
      },
    );
    assert.equal(sockets[0].protocol, 'actioncable-v1-ext-json', 'the server chose the extended protocol');
    // The client asks for history since it started; the room is new, so there is nothing.
    await waitFor(() => infos.includes('history_received'), 'no confirm_history for the first subscription');

    await addTask('First light');
    await waitFor(() => messages.length === 1, 'no broadcast arrived');
    const [first] = messages;
    assert.equal(first.title, 'First light');
    const stream = `rooms:${roomPath.split('/').pop()}`;
    assert.equal(first.meta?.stream, stream, `positions: ${inspect(first.meta)}`);
    assert.equal(typeof first.meta.epoch, 'string');
    assert.equal(first.meta.offset, 1);

    // The network drops; tasks are added meanwhile; the network comes back.
    offline = true;
    sockets.at(-1).terminate();
    await waitFor(() => cable.state !== 'connected', 'the client did not notice the drop');
    const missed = ['Second', 'Third', 'Fourth'];
    for (const title of missed) await addTask(title);
    const historyBefore = infos.filter((t) => t === 'history_received').length;
    offline = false;
    await waitFor(() => connects.some((c) => c.reconnect), 'the client did not reconnect');
    await waitFor(
      () => messages.length === 1 + missed.length,
      'the missed tasks were not replayed',
    );
    await waitFor(
      () => infos.filter((t) => t === 'history_received').length > historyBefore,
      'no confirm_history after the reconnect',
    );

    // Live again: one more, then nothing twice.
    await addTask('Fifth');
    await waitFor(() => messages.length === 5, 'no live broadcast after the replay');
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.deepEqual(
      messages.map((m) => [m.title, m.meta?.stream, m.meta?.epoch, m.meta?.offset]),
      ['First light', ...missed, 'Fifth'].map((title, i) => [title, stream, first.meta.epoch, i + 1]),
    );
    assert.ok(!infos.includes('history_not_found'), `history was refused: ${inspect(infos)}`);
    assert.deepEqual(socketErrors, []);
    const complaints = logger.entries.filter((e) => e.level === 'warn' || e.level === 'error');
    assert.deepEqual(complaints, [], diagnostics());
  },
);
