// What the console's browser tests share: Chromium, pages that record
// what the console must never do, the questions to the Go test that runs
// them (a line "@tether {json}" on stdout, answered by one JSON line on
// stdin), and a small runner whose last line says how many passed.

import { chromium } from 'playwright-core';
import path from 'node:path';
import readline from 'node:readline';

export const link = process.env.TETHER_CONSOLE_LINK;
export const origin = new URL(link).origin;
export const consoleURL = `${origin}/console/`;
const shots = process.env.TETHER_SHOTS;

const answers = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();

// ask asks the Go test to change the fleet and waits for its answer.
export async function ask(request) {
  process.stdout.write(`@tether ${JSON.stringify(request)}\n`);
  const { value, done } = await answers.next();
  if (done) throw new Error(`the Go test closed stdin before answering ${request.do}`);
  const answer = JSON.parse(value);
  if (answer.error) throw new Error(`${request.do}: ${answer.error}`);
  return answer;
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  // No network beyond loopback here: Chromium's own background traffic
  // would only fail.
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});

// violations are what a page did that the console must never do.
export const violations = [];

export async function newPage() {
  // The hub's certificate is signed by its own CA, which this browser
  // does not know.
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 760 } });
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin });
  const page = await context.newPage();
  page.on('console', (m) => {
    // A refused call is logged by the browser; the console shows the
    // hub's words for it.
    if (m.type() === 'error' && !/the server responded with a status of (400|401|404)/.test(m.text())) {
      violations.push(`console error: ${m.text()}`);
    }
  });
  page.on('pageerror', (e) => violations.push(`uncaught: ${e.message}`));
  page.on('request', (r) => {
    const u = new URL(r.url());
    if (!['data:', 'blob:'].includes(u.protocol) && u.origin !== origin) violations.push(`request to another origin: ${r.url()}`);
    if (/token=|SharedAccess|sig=/.test(r.url())) violations.push(`credential in a URL: ${r.url()}`);
    if (r.headers().cookie) violations.push(`cookie sent: ${r.url()}`);
  });
  page.on('response', async (r) => {
    if ((await r.allHeaders())['set-cookie']) violations.push(`cookie set by ${r.url()}`);
  });
  return page;
}

export async function shot(page, name) {
  if (shots) await page.screenshot({ path: path.join(shots, `${name}.png`) });
}

// waitState waits until the Devices page shows id in state and returns
// how long that took (ms).
export async function waitState(page, id, state, timeout) {
  const start = Date.now();
  await page.waitForFunction(([i, s]) => {
    const row = [...document.querySelectorAll('tr[data-device]')].find((r) => r.dataset.device === i);
    return row?.querySelector('.state')?.textContent === s;
  }, [id, state], { timeout, polling: 10 });
  return Date.now() - start;
}

const results = [];

export async function test(name, fn) {
  const start = Date.now();
  try {
    await fn();
    results.push(true);
    console.log(`ok   ${name} (${Date.now() - start} ms)`);
  } catch (e) {
    results.push(false);
    console.log(`FAIL ${name}: ${e.stack || e}`);
  }
}

// finish closes the browser, says how many passed and exits with it.
export async function finish(suite) {
  await browser.close();
  const failed = results.filter((ok) => !ok).length;
  console.log(`${suite}: ${results.length - failed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}
