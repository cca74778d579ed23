// The Devices page with ten thousand devices: the first page shows fast,
// search, sort and paging answer at once, and a connection still shows
// within a second. e2e/console_test.go registers the devices and runs
// this script.

import assert from 'node:assert/strict';
import { ask, finish, link, newPage, shot, test, violations, waitState } from './lib.mjs';

const devices = Number(process.env.TETHER_DEVICES);
const page = await newPage();

// summary waits until the pager says text and returns how long it took.
async function summary(text, timeout = 2000) {
  const start = Date.now();
  await page.waitForFunction((t) => document.querySelector('.pager .summary')?.textContent === t, text, { timeout, polling: 10 });
  return Date.now() - start;
}

await test(`${devices.toLocaleString('en')} devices: the first page of 50`, async () => {
  const start = Date.now();
  await page.goto(link);
  await summary(`1–50 of ${devices.toLocaleString()}`, 30000);
  assert.equal(await page.locator('table.devices tbody tr').count(), 50);
  console.log(`     first page ${Date.now() - start} ms after the link was opened`);
});

await test('search, filter, sort and page answer within a frame or two', async () => {
  const took = [];
  await page.fill('input[type="search"]', 'dev-0999');
  await summary(`1–10 of 10 (of ${devices.toLocaleString()})`);
  await shot(page, 'scale');
  await page.fill('input[type="search"]', 'dev-09999');
  took.push(await summary(`1–1 of 1 (of ${devices.toLocaleString()})`));
  await page.fill('input[type="search"]', '');
  await page.selectOption('select[aria-label="Filter by state"]', 'connected');
  took.push(await summary(`No device matches (of ${devices.toLocaleString()}).`));
  await page.selectOption('select[aria-label="Filter by state"]', 'all');
  await page.click('th button:has-text("Device")');
  await page.waitForFunction(() => document.querySelector('table.devices tbody tr')?.dataset.device === 'dev-09999');
  await page.click('button:has-text("Next")');
  took.push(await summary(`51–100 of ${devices.toLocaleString()}`));
  console.log(`     search ${took[0]} ms, filter ${took[1]} ms, next page ${took[2]} ms`);
  assert.ok(took.every((ms) => ms < 1000), `slow: ${took}`);
});

await test('a device that connects shows within a second among them all', async () => {
  await page.fill('input[type="search"]', 'dev-05000');
  await summary(`1–1 of 1 (of ${devices.toLocaleString()})`);
  await ask({ do: 'connect', id: 'dev-05000' });
  const ms = await waitState(page, 'dev-05000', 'connected', 1000);
  console.log(`     shown connected ${ms} ms after the hub had it`);
});

await test('no CSP violation, script error, cookie, outside request or credential in a URL', async () => {
  assert.deepEqual(violations, []);
});

await finish('console at scale');
