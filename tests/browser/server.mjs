// Shared setup for the browser tests and the screenshot script: a tasksync server of our own
// (fresh SQLite database, nothing shared with a developer's storage/) and headless Chromium.
//
// Both helpers throw instead of returning something half-started, so a test that cannot get a
// server or a browser fails loudly rather than being skipped.

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { access, constants, mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

/** The repository root, so the helpers work whatever directory node was started from. */
export const repoRoot = fileURLToPath(new URL('../../', import.meta.url));

const HOST = '127.0.0.1';

/** How much of the server's output to keep for error messages: the end is what explains a crash. */
const MAX_LOG_CHARS = 16_000;

/**
 * Debian's Chromium, never a browser download: only the package registries are reachable here.
 * The sandbox needs user namespaces that containers and CI often lack; QUIC, background
 * networking, component updates and sync would try to reach the internet.
 */
const CHROMIUM_PATH = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** Asks the OS for a port nobody listens on. It is released before the server binds it, so
 * another process could take it in between; on a test machine that window is harmless. */
async function freePort() {
  const probe = createServer();
  await new Promise((resolve, reject) => {
    probe.once('error', reject);
    probe.listen(0, HOST, resolve);
  });
  const { port } = probe.address();
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

/** Resolves once `GET /up` answers 200, or rejects when `gone()` says the process is gone or
 * time runs out. */
async function waitUntilUp(url, gone, deadline) {
  let lastProblem = 'no answer yet';
  while (Date.now() < deadline) {
    const why = gone();
    if (why) throw new Error(`the server ${why} before it was up`);
    try {
      const res = await fetch(`${url}/up`, { signal: AbortSignal.timeout(1_000) });
      if (res.status === 200) return;
      lastProblem = `GET /up answered ${res.status}`;
    } catch (err) {
      lastProblem = err.cause?.code ?? err.message;
    }
    await sleep(100);
  }
  throw new Error(`the server was not up in time (${lastProblem})`);
}

/**
 * Starts the already-built tasksync binary (TASKSYNC_BIN, default target/debug/tasksync) on a
 * free port, in a fresh temporary directory with its own SQLite database.
 *
 * @returns {Promise<{url: string, logs: () => string, stop: () => Promise<void>,
 *   restart: () => Promise<void>}>}
 */
export async function startServer({ timeoutMs = 20_000 } = {}) {
  // Resolved before spawning: the child runs in the temp dir, where a relative path would break.
  const bin = path.resolve(process.env.TASKSYNC_BIN || path.join(repoRoot, 'target/debug/tasksync'));
  try {
    await access(bin, constants.X_OK);
  } catch {
    throw new Error(`no tasksync binary at ${bin}: run \`cargo build\` first (or set TASKSYNC_BIN)`);
  }

  const dir = await mkdtemp(path.join(tmpdir(), 'tasksync-browser-'));
  const port = await freePort();
  const url = `http://${HOST}:${port}`;
  // Kept across restarts, so sessions and signed stream names stay valid, as in a deployment.
  const secret = randomBytes(32).toString('hex');

  let output = '';
  const keep = (chunk) => {
    output = (output + chunk).slice(-MAX_LOG_CHARS);
  };

  /** Spawns the binary on our port and directory; resolves once /up answers. */
  async function launch() {
    const child = spawn(bin, [], {
      // A temp cwd keeps anything the app writes relative to it (storage/) out of the repository.
      cwd: dir,
      env: {
        ...process.env,
        TASKSYNC_ENV: 'test',
        HOST,
        PORT: String(port),
        DATABASE_URL: `sqlite://${dir}/test.sqlite3`,
        SECRET_KEY_BASE: secret,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout.setEncoding('utf8').on('data', keep);
    child.stderr.setEncoding('utf8').on('data', keep);
    const exited = new Promise((resolve) => child.once('close', resolve));
    // A process that could not be spawned emits 'error' and never has an exit code.
    let spawnError = null;
    child.once('error', (err) => {
      spawnError = err;
    });
    const gone = () => {
      if (spawnError) return `could not be started (${spawnError.message})`;
      if (child.exitCode !== null || child.signalCode !== null) {
        return `exited (${child.exitCode ?? child.signalCode})`;
      }
      return null;
    };
    return { child, exited, gone };
  }

  /** SIGTERM, then SIGKILL if the graceful shutdown hangs. */
  async function terminate({ child, exited, gone }) {
    if (gone()) return;
    child.kill('SIGTERM');
    // actix drains connections on SIGTERM; don't let a stuck shutdown hang the test run.
    const graceful = await Promise.race([exited.then(() => true), sleep(5_000, false, { ref: false })]);
    if (!graceful) {
      child.kill('SIGKILL');
      await Promise.race([exited, sleep(2_000, undefined, { ref: false })]);
    }
  }

  let current = await launch();
  let stopped = false;
  async function stop() {
    if (stopped) return;
    stopped = true;
    await terminate(current);
    await rm(dir, { recursive: true, force: true });
  }

  async function up() {
    try {
      await waitUntilUp(url, current.gone, Date.now() + timeoutMs);
    } catch (err) {
      await stop();
      err.message += `\n--- tasksync output ---\n${output || '(none)'}`;
      throw err;
    }
  }

  /** Stops the server gracefully and starts it again on the same port and database. */
  async function restart() {
    await terminate(current);
    current = await launch();
    await up();
  }

  await up();
  return { url, logs: () => output, stop, restart };
}

/** Headless Debian Chromium with the flags this workplace needs. */
export async function launchBrowser() {
  try {
    return await chromium.launch({
      executablePath: CHROMIUM_PATH,
      args: CHROMIUM_ARGS,
      timeout: 20_000,
    });
  } catch (err) {
    err.message =
      `could not start Chromium at ${CHROMIUM_PATH} (install it with \`apt-get install chromium\`): ` +
      err.message;
    throw err;
  }
}
