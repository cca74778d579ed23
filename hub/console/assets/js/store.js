// What the console knows of the fleet, kept live: the registry's change
// feed (GET /events) fills devices and their connection states, and the
// pages listen for changes. One feed serves every page.

import { call, lines, HubError } from './api.js';
import { SessionExpired } from './auth.js';

export const store = {
  // devices: id -> {id, record, state, since, node, lastActivity}; an
  // entry without a record (its presence came first) is not shown.
  devices: new Map(),
  synced: false,
  // feed is 'connecting', 'live' or 'down'; feedError says why it is down.
  feed: 'connecting',
  feedError: '',
  // streams are GET /streams' last answer, and when it was read.
  streams: [],
  streamsRead: 0,
  // canWrite and canKill are what the hub answered to a harmless call of
  // each kind: true, false, or null while unknown; why is its message.
  canWrite: null,
  canWriteWhy: '',
  canKill: null,
  canKillWhy: '',
};

const listeners = new Set();

// listen calls fn on each change until the returned function is called.
export function listen(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

let scheduled = false;
// changed tells the listeners, at most once a frame.
export function changed() {
  if (scheduled) return;
  scheduled = true;
  requestAnimationFrame(() => {
    scheduled = false;
    for (const fn of listeners) fn();
  });
}

function entry(devices, id) {
  let e = devices.get(id);
  if (!e) {
    e = { id, record: null, state: 'Disconnected', since: '', node: '', lastActivity: '' };
    devices.set(id, e);
  }
  return e;
}

function apply(devices, ev) {
  switch (ev.type) {
    case 'device':
      entry(devices, ev.deviceId).record = ev.device;
      break;
    case 'deleted':
      devices.delete(ev.deviceId);
      break;
    case 'presence': {
      const e = entry(devices, ev.deviceId);
      e.state = ev.connectionState;
      e.since = ev.connectionStateUpdatedTime;
      e.lastActivity = ev.lastActivityTime;
      e.node = ev.node;
      break;
    }
    default:
  }
}

let abort = null;

// start follows the change feed of session's hub until stop, again after
// each break with a growing pause, and asks which writes the policy may
// make.
export function start(session, onExpired) {
  stop();
  const ctl = new AbortController();
  abort = ctl;
  follow(session, ctl.signal, onExpired);
  probeRights(session);
}

export function stop() {
  if (abort) abort.abort();
  abort = null;
  store.devices = new Map();
  store.synced = false;
  store.feed = 'connecting';
  store.feedError = '';
  store.streams = [];
  store.canWrite = null;
  store.canKill = null;
}

async function follow(session, signal, onExpired) {
  let pause = 500;
  while (!signal.aborted) {
    let fresh = new Map();
    try {
      store.feed = 'connecting';
      changed();
      for await (const ev of lines(session, '/events', signal)) {
        if (ev.type === 'synced') {
          store.devices = fresh;
          fresh = null;
          store.synced = true;
          store.feed = 'live';
          store.feedError = '';
          pause = 500;
        } else if (ev.type !== 'ping') {
          apply(fresh || store.devices, ev);
        }
        if (!fresh) changed();
      }
      store.feedError = 'the hub ended the feed';
    } catch (e) {
      if (signal.aborted) return;
      if (e instanceof SessionExpired) {
        onExpired(e);
        return;
      }
      store.feedError = e.message;
      if (e instanceof HubError && e.status === 401) pause = Math.max(pause, 10000);
    }
    store.feed = 'down';
    changed();
    await new Promise((r) => setTimeout(r, pause));
    pause = Math.min(pause * 2, 30000);
  }
}

// refreshStreams reads the streams open now on every node.
export async function refreshStreams(session) {
  store.streams = await call(session, 'GET', '/streams');
  store.streamsRead = Date.now();
  changed();
}

// probeRights asks the hub about calls it checks the rights of before it
// reads anything: a device document that is not JSON (400 when the policy
// may write the registry, 401 when not) and a stream id that cannot be
// one (400 when it may end streams). Neither changes anything.
async function probeRights(session) {
  const probe = async (method, path, body) => {
    try {
      await call(session, method, path, { body });
      return [true, ''];
    } catch (e) {
      if (e instanceof HubError && e.status === 400) return [true, ''];
      return [false, e.message];
    }
  };
  [store.canWrite, store.canWriteWhy] = await probe('PUT', '/devices/console-rights-check', 'not a device');
  [store.canKill, store.canKillWhy] = await probe('DELETE', '/streams/0');
  changed();
}
