// The Replay page: a terminal session the hub recorded (tetherd
// --record-terminals), played from its asciicast v2 file (GET
// /streams/ID/recording, which takes RegistryRead, as the logs do) in a
// read-only xterm.js at the size it was recorded at, as tether logs
// --replay plays it in a terminal. Only the shell's output was recorded,
// never the keys typed.

import { text } from './api.js';
import { h } from './dom.js';
import { xtermModules } from './terminal.js';

// A pause longer than this plays as this long: a session left idle for
// an hour does not take an hour to watch.
const maxPause = 2000;
const speeds = [1, 2, 4, 8];

// parseCast reads an asciicast v2 file: a header line, then one event a
// line, [seconds, type, data]. Events it cannot read are skipped.
export function parseCast(body) {
  const lines = body.split('\n').filter((l) => l.trim() !== '');
  if (lines.length === 0) throw new Error('the recording is empty');
  let header;
  try {
    header = JSON.parse(lines[0]);
  } catch {
    throw new Error('the recording has no asciicast header');
  }
  if (header.version !== 2) throw new Error(`the recording is asciicast version ${header.version}, not 2`);
  const events = [];
  for (const l of lines.slice(1)) {
    try {
      const [t, type, data] = JSON.parse(l);
      if (typeof t === 'number' && typeof data === 'string' && (type === 'o' || type === 'r')) events.push({ t, type, data });
    } catch {
      // A line cut short by a node that stopped mid-session.
    }
  }
  return { width: header.width || 80, height: header.height || 24, events };
}

function clock(seconds) {
  const s = Math.floor(seconds);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}

// replayPage is #/replay/STREAM-ID.
export function replayPage(session, main) {
  const m = /^#\/replay\/([^/]+)$/.exec(location.hash) || [];
  const id = m[1] ? decodeURIComponent(m[1]) : '';
  const status = h('span', { class: 'term-status', id: 'replay-status', role: 'status' }, 'Loading…');
  const screen = h('div', { class: 'term-screen', id: 'replay' });
  const play = h('button', { type: 'button', id: 'replay-play', disabled: true, onclick: () => (timer ? pause() : resume()) }, 'Play');
  const restart = h('button', { type: 'button', id: 'replay-restart', disabled: true, onclick: () => { reset(); resume(); } }, 'Restart');
  const end = h('button', { type: 'button', id: 'replay-end', disabled: true, onclick: () => toEnd() }, 'To the end');
  const speed = h('select', { id: 'replay-speed', 'aria-label': 'Speed', onchange: () => { if (timer) { pause(); resume(); } } },
    speeds.map((s) => h('option', { value: String(s) }, `${s}×`)));
  main.replaceChildren(
    h('div', { class: 'toolbar term-bar' },
      h('a', { href: '#/logs' }, '‹ Logs'),
      h('h1', { class: 'term-title' }, 'Replay ', h('span', { class: 'id' }, id)),
      status, h('span', { class: 'grow' }), play, speed, restart, end),
    screen);
  if (!id) {
    status.textContent = 'No stream named: replay a session from the Logs page.';
    return () => {};
  }
  document.title = `Replay ${id} · Tether`;

  const abort = new AbortController();
  let term = null;
  let cast = null;
  let next = 0; // the next event to write
  let at = 0; // where the replay is, in seconds of the recording
  let timer = null;
  let left = false;

  function say(msg, kind) {
    status.textContent = msg;
    status.className = `term-status ${kind || ''}`;
  }

  function show() {
    const total = cast.events.length ? cast.events[cast.events.length - 1].t : 0;
    const done = next >= cast.events.length;
    screen.dataset.state = done ? 'ended' : timer ? 'playing' : 'paused';
    play.textContent = timer ? 'Pause' : 'Play';
    play.disabled = done;
    end.disabled = done;
    say(`${clock(at)} / ${clock(total)}${done ? ', ended' : ''}`, done ? 'ok' : '');
  }

  function write(ev) {
    if (ev.type === 'o') {
      term.write(ev.data);
      return;
    }
    const [cols, rows] = ev.data.split('x').map(Number);
    if (cols > 0 && rows > 0) term.resize(cols, rows);
  }

  // step writes what is due and waits for the next event, its pause cut
  // to maxPause and divided by the speed.
  function step() {
    timer = null;
    while (next < cast.events.length && cast.events[next].t <= at) write(cast.events[next++]);
    if (next < cast.events.length) {
      const ev = cast.events[next];
      const wait = Math.min((ev.t - at) * 1000, maxPause) / Number(speed.value);
      timer = setTimeout(() => {
        at = ev.t;
        step();
      }, wait);
    }
    show();
  }

  function resume() {
    if (!timer && next < cast.events.length) step();
  }

  function pause() {
    clearTimeout(timer);
    timer = null;
    show();
  }

  function reset() {
    pause();
    term.reset();
    term.resize(cast.width, cast.height);
    next = 0;
    at = 0;
  }

  function toEnd() {
    pause();
    while (next < cast.events.length) write(cast.events[next++]);
    if (cast.events.length) at = cast.events[cast.events.length - 1].t;
    show();
  }

  (async () => {
    let xterm;
    try {
      ({ xterm } = await xtermModules());
      cast = parseCast(await text(session, `/streams/${encodeURIComponent(id)}/recording`, abort.signal));
    } catch (e) {
      if (e.name !== 'AbortError') say(`Cannot replay stream ${id}: ${e.message}`, 'error');
      return;
    }
    if (left) return;
    term = new xterm.Terminal({
      cols: cast.width,
      rows: cast.height,
      disableStdin: true,
      cursorBlink: false,
      scrollback: 5000,
      fontFamily: 'ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace',
      fontSize: 14,
    });
    term.open(screen);
    restart.disabled = false;
    step();
  })();

  return () => {
    left = true;
    abort.abort();
    clearTimeout(timer);
    term?.dispose();
  };
}
