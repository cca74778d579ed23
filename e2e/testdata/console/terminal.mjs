// Browser tests of the console's Terminal: a shell on a device in
// Chromium. e2e/terminal_browser_test.go starts tetherd and an agent that
// serves @shell (bash) as device term-1, and answers "gone": whether the
// device's process PID has ended.
//
// The hub records terminal sessions (--record-terminals): the last test
// replays this one from the Logs page.
//
// Environment: TETHER_CONSOLE_LINK, TETHER_SHOTS, CHROMIUM (lib.mjs).

import assert from 'node:assert/strict';
import { ask, consoleURL, finish, link, newPage, shot, test, violations, waitState } from './lib.mjs';

const page = await newPage();

// screenText is what the terminal shows, its rows joined by newlines.
function screenText() {
  return page.evaluate(() => [...document.querySelectorAll('#terminal .xterm-rows > div')]
    .map((r) => r.textContent.replace(/\u00a0/g, ' ')).join('\n'));
}

// waitScreen waits for the terminal to show re and returns the match.
async function waitScreen(re, timeout = 15000) {
  const start = Date.now();
  for (;;) {
    const m = re.exec(await screenText());
    if (m) return m;
    if (Date.now() - start > timeout) throw new Error(`the terminal shows no ${re} within ${timeout} ms:\n${await screenText()}`);
    await page.waitForTimeout(50);
  }
}

async function typeLine(s) {
  await page.keyboard.type(s);
  await page.keyboard.press('Enter');
}

let pid = 0;

await test('open a terminal on a device from its row and run a command', async () => {
  await page.goto(link);
  await waitState(page, 'term-1', 'connected', 10000);
  // The page renders again on every live update (streams are read every
  // few seconds): a row that shows the same keeps its elements, or a
  // click whose press and release straddle an update is lost.
  const button = await page.$('tr[data-device="term-1"] a:has-text("Terminal")');
  await page.fill('input[type=search]', 'term-');
  await page.fill('input[type=search]', '');
  assert.ok(await button.evaluate((el) => el.isConnected), 'a render replaced the Terminal link of an unchanged row');
  await page.click('tr[data-device="term-1"] a:has-text("Terminal")');
  await page.waitForSelector('#terminal-status.ok');
  assert.match(await page.textContent('#terminal-status'), /Connected to term-1/);
  await typeLine('echo tether-$RANDOM');
  const m = await waitScreen(/^tether-(\d+)\s*$/m);
  assert.ok(Number(m[1]) >= 0);
  await typeLine('echo "pid-$$-end"');
  pid = Number((await waitScreen(/^pid-(\d+)-end/m))[1]);
  assert.ok(pid > 0);
  await shot(page, 'terminal');
});

await test('the device\'s terminal follows the page\'s size', async () => {
  const check = async () => {
    const size = await page.getAttribute('#terminal', 'data-size');
    await typeLine('clear; echo "size-$(stty size)-end"');
    await waitScreen(new RegExp(`^size-${size}-end`, 'm'));
    return size;
  };
  const before = await check();
  await page.setViewportSize({ width: 900, height: 520 });
  await page.waitForFunction((b) => document.querySelector('#terminal').dataset.size !== b, before);
  const after = await check();
  assert.notEqual(after, before);
});

await test('UTF-8 from the device: box drawing and emoji', async () => {
  // The bytes, not the characters, are typed: what shows was decoded here.
  await typeLine("clear; printf 'box-\\342\\225\\224\\342\\225\\220\\342\\225\\227 emoji-\\360\\237\\231\\202 end\\n'");
  await waitScreen(/^box-╔═╗ emoji-🙂\s*end/m);
  // And typed: what the shell gets back is what was typed.
  await typeLine("clear; echo 'typed-┃-🚀' | od -An -tx1 | tr -d ' \\n'; echo");
  await waitScreen(/74797065642de294832df09f9a800a/);
});

await test('paste with Ctrl+Shift+V and copy with Ctrl+Shift+C', async () => {
  await page.evaluate(() => navigator.clipboard.writeText('echo pasted-$((2+3))'));
  await typeLine('clear');
  await page.keyboard.press('Control+Shift+V');
  // The clipboard is read asynchronously: Enter after the paste shows.
  await waitScreen(/echo pasted-\$\(\(2\+3\)\)/);
  await page.keyboard.press('Enter');
  await waitScreen(/^pasted-5\s*$/m);
  await typeLine('clear; echo copyme-42');
  await waitScreen(/^copyme-42\s*$/m);
  const row = page.locator('#terminal .xterm-rows > div', { hasText: /^copyme-42\s*$/ }).first();
  const box = await row.boundingBox();
  await page.mouse.dblclick(box.x + 20, box.y + box.height / 2);
  await page.keyboard.press('Control+Shift+C');
  await page.waitForFunction(async () => (await navigator.clipboard.readText()) === 'copyme-42');
});

await test('closing the tab ends the shell on the device', async () => {
  assert.ok(pid > 0, 'no pid from the first test');
  await page.close();
  const { gone } = await ask({ do: 'gone', pid });
  assert.ok(gone, `the device's shell ${pid} still runs after the tab closed`);
});

await test('the Logs page replays the recorded session', async () => {
  const logs = await newPage();
  await logs.goto(link);
  await logs.waitForSelector('#policy');
  await logs.goto(`${consoleURL}#/logs`);
  await logs.fill('#log-device', 'term-1');
  // The record is written as the stream ends: ask until it is there.
  const start = Date.now();
  while (!(await logs.$('a.replay'))) {
    if (Date.now() - start > 15000) throw new Error(`no Replay link for term-1's session:\n${await logs.textContent('main')}`);
    await logs.click('form.filters button[type=submit]');
    await logs.waitForTimeout(300);
  }
  await logs.click('a.replay');
  await logs.waitForSelector('#replay .xterm-rows');
  await logs.click('#replay-end');
  await logs.waitForSelector('#replay[data-state="ended"]');
  const shown = async () => logs.evaluate(() => [...document.querySelectorAll('#replay .xterm-rows > div')]
    .map((r) => r.textContent.replace(/\u00a0/g, ' ')).join('\n'));
  const until = Date.now() + 10000;
  while (!/^copyme-42\s*$/m.test(await shown())) {
    if (Date.now() > until) throw new Error(`the replay's end shows no copyme-42:\n${await shown()}`);
    await logs.waitForTimeout(50);
  }
  assert.match(await logs.textContent('#replay-status'), /ended/);
  await shot(logs, 'replay');
  // Played from the start, it runs on its own.
  await logs.click('#replay-restart');
  await logs.waitForSelector('#replay[data-state="playing"], #replay[data-state="ended"]');
  // A stream with no recording says why, in the hub's words.
  await logs.goto(`${consoleURL}#/replay/NOSUCHSTREAM`);
  await logs.waitForSelector('#replay-status.error');
  assert.match(await logs.textContent('#replay-status'), /no recording of stream NOSUCHSTREAM/);
  await logs.close();
});

await test('no CSP violation, script error, cookie, outside request or credential in a URL', async () => {
  assert.deepEqual(violations, []);
});

await finish('terminal');
