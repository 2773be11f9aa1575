// Regenerates docs/screenshot.png: a room with realistic tasks as Ada sees it while Grace is in
// the room too, has just ticked a task off, and is typing a new one.
// Not a test (node --test only picks up *.test.mjs here); run it after `cargo build` with
//   node tests/browser/screenshot.mjs
// The tasks are entered through the UI, the way a person would, so the picture can only show
// what the app really renders.

import { mkdir } from 'node:fs/promises';
import path from 'node:path';

import { launchBrowser, repoRoot, startServer } from './server.mjs';

const OUTPUT = path.join(repoRoot, 'docs/screenshot.png');
const TIMEOUT = 5_000;

const TASKS = [
  { title: 'Finalize the pricing page copy' },
  {
    title: 'Record the product demo video',
    notes: 'Keep it under three minutes: create a room, add a few tasks, tick one off, clear it.',
  },
  { title: 'Email the beta list about launch day', done: true },
];

/** Runs `action` and waits until the Turbo Stream answer to its form post has been received. */
async function viaStream(page, action) {
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.request().method() === 'POST', { timeout: TIMEOUT }),
    action(),
  ]);
  if (!response.ok()) throw new Error(`POST ${response.url()} answered ${response.status()}`);
}

const server = await startServer();
let browser;
try {
  browser = await launchBrowser();
  const context = await browser.newContext({ viewport: { width: 1200, height: 800 } });
  context.setDefaultTimeout(TIMEOUT);
  const page = await context.newPage();

  await page.goto(`${server.url}/session/new`);
  await page.getByLabel('Your name').fill('Ada');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL((u) => u.pathname === '/rooms');

  await page.getByLabel('New room').fill('Launch plan');
  await page.getByRole('button', { name: 'Create room' }).click();
  await page.waitForURL((u) => /^\/rooms\/\d+$/.test(u.pathname));
  const roomUrl = page.url();

  for (const task of TASKS) {
    await page.getByLabel('New task').fill(task.title);
    if (task.notes) {
      await page.locator('#new_task summary', { hasText: 'Add notes' }).click();
      await page.locator('#new_task').getByLabel('Notes').fill(task.notes);
    }
    await viaStream(page, () => page.getByRole('button', { name: 'Add task' }).click());
    // The stream also replaces the form; wait for the blank one before typing the next task.
    await page.locator('#new_task #task_title:placeholder-shown').waitFor();
  }
  for (const task of TASKS.filter((t) => t.done)) {
    const row = page.locator('#tasks > .task').filter({ has: page.getByText(task.title, { exact: true }) });
    await viaStream(page, () => row.getByRole('button', { name: /^Mark as done/ }).click());
    await row.locator('button.check[aria-pressed="true"]').waitFor();
  }

  // Grace joins from a second browser, ticks the first task off and starts typing a new one.
  const graceContext = await browser.newContext({ viewport: { width: 1200, height: 800 } });
  graceContext.setDefaultTimeout(TIMEOUT);
  const grace = await graceContext.newPage();
  await grace.goto(`${server.url}/session/new`);
  await grace.getByLabel('Your name').fill('Grace');
  await grace.getByRole('button', { name: 'Sign in' }).click();
  await grace.waitForURL((u) => u.pathname === '/rooms');
  await grace.goto(roomUrl);
  await grace.locator('turbo-cable-stream-source[connected]').waitFor({ state: 'attached' });
  const first = grace.locator('#tasks > .task').first();
  await viaStream(grace, () => first.getByRole('button', { name: /^Mark as done/ }).click());
  await page.locator('#tasks > .task.task--done').first().waitFor();
  await page.locator('.presence__people li', { hasText: 'Grace' }).waitFor();
  await grace.getByLabel('New task').pressSequentially('Write the support FAQ', { delay: 20 });
  await page.locator('.presence__typing', { hasText: 'Grace is typing' }).waitFor();
  await page.evaluate(() => document.activeElement?.blur());
  await mkdir(path.dirname(OUTPUT), { recursive: true });
  await page.screenshot({ path: OUTPUT });
  console.log(`wrote ${path.relative(process.cwd(), OUTPUT) || OUTPUT}`);
} finally {
  await browser?.close();
  await server.stop();
}
