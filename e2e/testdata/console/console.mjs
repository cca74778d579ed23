// Browser tests of Tether's web console. e2e/console_test.go starts a
// hub (tetherd) and runs this script with node; Playwright drives Debian's
// Chromium, headless. What needs the fleet to change (an agent started or
// stopped, a stream opened) the script asks of the Go test (lib.mjs).
//
// Environment: TETHER_CONSOLE_LINK (from tether console), TETHER_READONLY
// and TETHER_NOREAD (the connection strings of the registryRead and
// service policies), TETHER_SHOTS (where the screenshots go), CHROMIUM
// (default /usr/bin/chromium).

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { ask, consoleURL, finish, link, newPage, shot, test, violations, waitState } from './lib.mjs';

const readOnlyConnstr = process.env.TETHER_READONLY;
const noReadConnstr = process.env.TETHER_NOREAD;

function stateOf(page, id) {
  return page.locator(`tr[data-device="${id.replace(/["\\]/g, '\\$&')}"] .state`);
}

async function search(page, text) {
  await page.fill('input[type="search"]', text);
}

// Live state changes must show within a second of the change.
const live = 1000;

const page = await newPage();

await test('sign in with the link of tether console', async () => {
  await page.goto(link);
  await page.waitForSelector('#policy');
  assert.equal(await page.textContent('#policy'), 'iothubowner');
  assert.ok(!page.url().includes('token'), `the token stayed in the address bar: ${page.url()}`);
  const stored = await page.evaluate(() => JSON.stringify(sessionStorage));
  assert.ok(!stored.includes('"key"'), 'a key in session storage after a link sign-in');
  assert.equal(await page.evaluate(() => document.cookie), '');
  await page.waitForSelector('#feed.live');
});

await test('an agent shows connected, then disconnected when it stops, within a second', async () => {
  await ask({ do: 'startAgent', id: 'sensor-1' });
  const up = await waitState(page, 'sensor-1', 'connected', live);
  await ask({ do: 'stopAgent', id: 'sensor-1' });
  const down = await waitState(page, 'sensor-1', 'disconnected', live);
  console.log(`     shown connected ${up} ms after the hub had it, disconnected ${down} ms after the agent stopped`);
});

await test('add a device and run an agent with its copied connection string', async () => {
  // By keyboard: the dialog takes the focus, Enter adds.
  await page.click('#add-device');
  await page.keyboard.type('added-1');
  await page.keyboard.press('Enter');
  await page.waitForSelector('#connection-string');
  const shown = await page.textContent('#connection-string');
  assert.match(shown, /^HostName=[^;]+;DeviceId=added-1;SharedAccessKey=[A-Za-z0-9+/]+=*$/);
  await shot(page, 'add-device');
  await page.click('dialog button:has-text("Copy")');
  await page.waitForSelector('dialog button:has-text("Copied")');
  const copied = await page.evaluate(() => navigator.clipboard.readText());
  assert.equal(copied, shown);
  await page.click('dialog button:has-text("Done")');
  await ask({ do: 'startAgentWith', connstr: copied });
  await waitState(page, 'added-1', 'connected', 10000);
});

await test('disable and enable a device, each confirmed', async () => {
  await page.click('button[aria-label="Disable added-1"]');
  await page.click('dialog button:has-text("Cancel")');
  assert.equal(await stateOf(page, 'added-1').textContent(), 'connected');
  await page.click('button[aria-label="Disable added-1"]');
  await page.click('dialog button.danger:has-text("Disable")');
  await waitState(page, 'added-1', 'disabled', live);
  await page.click('button[aria-label="Enable added-1"]');
  await page.click('dialog button.primary:has-text("Enable")');
  await page.waitForFunction(() => document.querySelector('tr[data-device="added-1"] .state')?.textContent !== 'disabled', null, { timeout: live });
  await shot(page, 'devices');
});

await test('a device id and a stream name holding HTML show as text', async () => {
  const { device, name } = await ask({ do: 'htmlStream' });
  await search(page, 'onmouseover');
  await waitState(page, device, 'connected', 5000);
  const cell = page.locator('tr[data-device] td.id').first();
  assert.equal(await cell.textContent(), device);
  await page.goto(`${consoleURL}#/streams`);
  const row = page.locator('table.streams tbody tr', { hasText: 'onerror' });
  await row.waitFor({ timeout: 5000 });
  assert.equal(await row.locator('td').nth(1).textContent(), name);
  assert.equal(await page.locator('table img').count(), 0, 'the stream name became an element');
  assert.equal(await page.evaluate(() => window.xss), undefined, 'the stream name ran script');
  await ask({ do: 'endHtmlStream' });
  await page.goto(`${consoleURL}#/devices`);
  await search(page, '');
});

await test('a stream opened with tether forward is listed with its bytes', async () => {
  const { bytes } = await ask({ do: 'forward', id: 'sensor-2' });
  await page.goto(`${consoleURL}#/streams`);
  const row = page.locator('table.streams tbody tr', { hasText: 'sensor-2' });
  await row.waitFor({ timeout: 5000 });
  await page.waitForFunction((n) => {
    const r = [...document.querySelectorAll('table.streams tbody tr')].find((tr) => tr.textContent.includes('sensor-2'));
    const cells = r ? r.querySelectorAll('td') : [];
    return cells.length > 8 && cells[7].title === `${n} bytes` && cells[8].title === `${n} bytes`;
  }, bytes, { timeout: 5000 });
  assert.equal(await row.locator('td').nth(2).textContent(), 'iothubowner');
  await shot(page, 'streams');
  await row.locator('button:has-text("End")').click();
  await page.click('dialog button.danger:has-text("End stream")');
  await row.waitFor({ state: 'detached', timeout: 5000 });
  await ask({ do: 'endForward' });
});

await test('stream logs: filter by device and result, live tail, download', async () => {
  await page.goto(`${consoleURL}#/logs`);
  await page.fill('#log-device', 'sensor-2');
  await page.click('form.filters button[type="submit"]');
  await page.waitForSelector('table.logs tbody tr');
  const devices = await page.locator('table.logs tbody td.id').allTextContents();
  assert.ok(devices.length > 0 && devices.every((d) => d === 'sensor-2'), `rows of other devices: ${devices}`);
  await page.selectOption('#log-result', 'offline');
  await page.waitForFunction(() => document.querySelectorAll('table.logs tbody tr').length === 0);
  await page.selectOption('#log-result', '');
  await page.fill('#log-device', '');
  await page.click('#log-tail');
  await page.waitForSelector('#log-tail[aria-pressed="true"]');
  const before = await page.locator('table.logs tbody tr').count();
  await ask({ do: 'offlineRequest', id: 'sensor-1' });
  await page.waitForFunction((n) => document.querySelectorAll('table.logs tbody tr').length > n, before, { timeout: 5000 });
  const newest = page.locator('table.logs tbody tr').first();
  assert.equal(await newest.locator('td.id').textContent(), 'sensor-1');
  assert.equal(await newest.locator('.result').textContent(), 'offline');
  await shot(page, 'logs');
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#log-download')]);
  const file = await download.path();
  const records = (await readFile(file, 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(records.length, before + 1);
  assert.ok(records.every((r) => r.category === 'DeviceStreams' && r.sequence > 0));
  await page.click('#log-tail');
});

await test('fits a phone screen: the table scrolls, the page does not', async () => {
  await page.goto(`${consoleURL}#/devices`);
  await page.setViewportSize({ width: 390, height: 844 });
  await page.waitForSelector('tr[data-device="added-1"]');
  const widths = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
  assert.ok(widths[0] <= widths[1], `the page is ${widths[0]} px wide on a ${widths[1]} px screen`);
  await shot(page, 'phone');
  await page.setViewportSize({ width: 1280, height: 760 });
});

await test('the hub page lists the node with its devices', async () => {
  // added-1's agent comes back after its enable at its own back-off: the
  // node counts it once it is connected again.
  await page.goto(`${consoleURL}#/devices`);
  await waitState(page, 'added-1', 'connected', 30000);
  await page.goto(`${consoleURL}#/hub`);
  const row = page.locator('table.nodes tbody tr').first();
  await row.waitFor({ timeout: 5000 });
  assert.match(await row.textContent(), /ready/);
  assert.equal(await row.locator('td').nth(4).textContent(), '2', 'devices connected to the node');
  await shot(page, 'hub');
});

await test('rotate a key and delete a device, each confirmed', async () => {
  await page.goto(`${consoleURL}#/devices`);
  await page.click('button[aria-label="Rotate key added-1"]');
  await page.click('dialog button.danger:has-text("Rotate key")');
  await page.waitForSelector('#connection-string');
  const shown = await page.textContent('#connection-string');
  assert.match(shown, /^HostName=[^;]+;DeviceId=added-1;SharedAccessKey=/);
  await page.click('dialog button:has-text("Done")');
  // The agent's key no longer opens the device: the hub ends its session.
  await waitState(page, 'added-1', 'disconnected', live);
  await page.click('button[aria-label="Delete sensor-1"]');
  await page.click('dialog button.danger:has-text("Delete")');
  await page.waitForSelector('tr[data-device="sensor-1"]', { state: 'detached', timeout: live });
  await ask({ do: 'stopAgent', id: 'added-1' });
  await ask({ do: 'startAgentWith', connstr: shown });
  await waitState(page, 'added-1', 'connected', 10000);
});

await test('a read-only policy sees the fleet and cannot change it', async () => {
  const ro = await newPage();
  await ro.goto(consoleURL);
  await ro.fill('#connstr', readOnlyConnstr);
  await ro.click('form.signin button[type="submit"]');
  await ro.waitForSelector('#readonly-badge:not([hidden])');
  await ro.waitForSelector('tr[data-device="added-1"]', { timeout: 5000 });
  assert.equal(await ro.locator('#add-device').isVisible(), false);
  assert.equal(await ro.locator('table.devices button:not(.sort)').count(), 0);
  assert.match(await ro.textContent('.readonly'), /registryRead may not change the registry \(the hub answered: Unauthorized\)/);
  await shot(ro, 'read-only');
  await ro.context().close();
});

await test('a wrong key, and a policy without RegistryRead, are refused at sign-in with the hub\'s words', async () => {
  const wrongKey = readOnlyConnstr.replace(/SharedAccessKey=[^;]+/, 'SharedAccessKey=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=');
  for (const connstr of [wrongKey, noReadConnstr]) {
    const bad = await newPage();
    await bad.goto(consoleURL);
    await bad.fill('#connstr', connstr);
    await bad.click('form.signin button[type="submit"]');
    await bad.waitForFunction(() => /refused policy .* \(Unauthorized\)/.test(document.querySelector('#signin-error')?.textContent || ''), null, { timeout: 5000 });
    assert.equal(await bad.locator('#nav').isVisible(), false);
    assert.equal(await bad.evaluate(() => sessionStorage.length), 0);
    if (connstr === wrongKey) await shot(bad, 'refused');
    await bad.context().close();
  }
});

await test('sign out forgets the session', async () => {
  await page.goto(consoleURL);
  await page.click('button:has-text("Sign out")');
  await page.waitForSelector('form.signin');
  assert.equal(await page.evaluate(() => sessionStorage.length), 0);
  await page.reload();
  await page.waitForSelector('form.signin');
  await shot(page, 'sign-in');
});

await test('no CSP violation, script error, cookie, outside request or credential in a URL', async () => {
  assert.deepEqual(violations, []);
});

await finish('console');
