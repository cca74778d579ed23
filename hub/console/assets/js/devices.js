// The Devices page: every device with its state, live from the change
// feed; search, filter, sort and pages, so that ten thousand devices cost
// one page of rows; and the registry's writes, each confirmed first.

import { call, devicePath } from './api.js';
import { h, every, dialog, confirm, notify, busy, ago, localTime, copyButton } from './dom.js';
import { store, listen, refreshStreams } from './store.js';

const pageSize = 50;

// The view's state outlives a visit to another page.
const view = { search: '', state: 'all', sort: 'id', desc: false, page: 0 };

// Azure's device id rules (the hub's registry.ValidateID): checked here
// only to say so before a round trip; the hub decides.
const idPattern = /^[A-Za-z0-9\-.+%_#*?!(),:=@$']{1,128}$/;

// stateOf is what the page shows of a device: disabled wins.
function stateOf(e) {
  if (e.record.status === 'disabled') return 'disabled';
  return e.state === 'Connected' ? 'connected' : 'disconnected';
}

function sinceOf(e) {
  return stateOf(e) === 'disabled' ? e.record.statusUpdatedTime : e.since;
}

function streamCounts() {
  const n = new Map();
  for (const s of store.streams) n.set(s.deviceId, (n.get(s.deviceId) || 0) + 1);
  return n;
}

const columns = [
  { key: 'id', title: 'Device', value: (e) => e.id },
  { key: 'state', title: 'State', value: (e) => stateOf(e) },
  { key: 'since', title: 'Since', value: (e) => Date.parse(sinceOf(e)) || 0 },
  { key: 'node', title: 'Node', value: (e) => (stateOf(e) === 'connected' ? e.node : '') },
  { key: 'auth', title: 'Auth', value: (e) => e.record.authentication?.type || 'sas' },
  { key: 'streams', title: 'Streams', value: (e, counts) => counts.get(e.id) || 0 },
];

function visible(counts) {
  const q = view.search.trim().toLowerCase();
  const col = columns.find((c) => c.key === view.sort);
  const list = [];
  for (const e of store.devices.values()) {
    if (!e.record) continue;
    if (q && !e.id.toLowerCase().includes(q)) continue;
    if (view.state !== 'all' && stateOf(e) !== view.state) continue;
    list.push(e);
  }
  const dir = view.desc ? -1 : 1;
  list.sort((a, b) => {
    const va = col.value(a, counts);
    const vb = col.value(b, counts);
    if (va < vb) return -dir;
    if (va > vb) return dir;
    return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
  });
  return list;
}

export function devicesPage(session, main) {
  const search = h('input', {
    type: 'search', placeholder: 'Search device ids', 'aria-label': 'Search device ids', value: view.search,
    oninput: (e) => { view.search = e.target.value; view.page = 0; render(); },
  });
  const stateSelect = h('select', { 'aria-label': 'Filter by state', onchange: (e) => { view.state = e.target.value; view.page = 0; render(); } },
    ['all', 'connected', 'disconnected', 'disabled'].map((s) => h('option', { value: s }, s === 'all' ? 'All states' : s)));
  stateSelect.value = view.state;
  const addButton = h('button', { type: 'button', class: 'primary', id: 'add-device', onclick: () => addDevice(session) }, 'Add device');
  const head = h('tr');
  const body = h('tbody');
  const summary = h('p', { class: 'summary', 'aria-live': 'polite' });
  const prev = h('button', { type: 'button', onclick: () => { view.page--; render(); } }, '‹ Previous');
  const next = h('button', { type: 'button', onclick: () => { view.page++; render(); } }, 'Next ›');
  const readOnly = h('p', { class: 'readonly', hidden: true });
  main.replaceChildren(
    h('div', { class: 'toolbar' }, search, stateSelect, h('span', { class: 'grow' }), addButton),
    readOnly,
    h('div', { class: 'table-wrap' }, h('table', { class: 'devices' }, h('thead', null, head), body)),
    h('div', { class: 'pager' }, summary, h('span', { class: 'grow' }), prev, next),
  );

  function renderHead() {
    head.replaceChildren(...columns.map((c) => {
      const sorted = view.sort === c.key;
      return h('th', { scope: 'col', 'aria-sort': sorted ? (view.desc ? 'descending' : 'ascending') : 'none' },
        h('button', {
          type: 'button', class: 'sort',
          onclick: () => { view.desc = sorted ? !view.desc : false; view.sort = c.key; render(); },
        }, c.title, sorted ? (view.desc ? ' ▼' : ' ▲') : ''));
    }), store.canWrite === false ? null : h('th', { scope: 'col' }, h('span', { class: 'visually-hidden' }, 'Actions')));
  }

  function render() {
    renderHead();
    const writable = store.canWrite !== false;
    addButton.hidden = !writable;
    readOnly.hidden = store.canWrite !== false;
    readOnly.textContent = `Read-only: policy ${session.keyName} may not change the registry (the hub answered: ${store.canWriteWhy}).`;
    if (!store.synced) {
      summary.textContent = store.feed === 'down' ? `Cannot read the devices: ${store.feedError}` : 'Reading the registry…';
      body.replaceChildren();
      prev.disabled = next.disabled = true;
      return;
    }
    const counts = streamCounts();
    const list = visible(counts);
    const pages = Math.max(1, Math.ceil(list.length / pageSize));
    view.page = Math.min(Math.max(view.page, 0), pages - 1);
    const first = view.page * pageSize;
    const rows = list.slice(first, first + pageSize);
    // Keep the keyboard where it was across a live update.
    const focused = document.activeElement?.dataset?.focusKey;
    patchRows(body, rows.map((e) => row(session, e, counts, writable)));
    if (focused && document.activeElement?.dataset?.focusKey !== focused) {
      body.querySelector(`[data-focus-key="${CSS.escape(focused)}"]`)?.focus();
    }
    let total = 0;
    for (const e of store.devices.values()) if (e.record) total++;
    summary.textContent = list.length === 0
      ? (total === 0 ? 'No devices yet.' : `No device matches (of ${total.toLocaleString()}).`)
      : `${(first + 1).toLocaleString()}–${(first + rows.length).toLocaleString()} of ${list.length.toLocaleString()}` +
        (list.length !== total ? ` (of ${total.toLocaleString()})` : '');
    prev.disabled = view.page === 0;
    next.disabled = view.page >= pages - 1;
  }

  render();
  // Open streams per device: one listing of every node's, now and then.
  const poll = async () => {
    try {
      await refreshStreams(session);
    } catch {
      // The Streams page says why; the counts stay as they were.
    }
  };
  return every(3000, poll, listen(render));
}

// patchRows makes body's rows those of fresh, keeping every row and cell
// that shows the same as before. A live update comes every few seconds;
// replacing a button between a press and its release would lose the
// click, and a moved element loses the keyboard's focus.
function patchRows(body, fresh) {
  const old = new Map();
  for (const tr of body.children) old.set(tr.dataset.device, tr);
  fresh.forEach((tr, i) => {
    const kept = old.get(tr.dataset.device);
    if (kept) {
      old.delete(tr.dataset.device);
      patchCells(kept, tr);
      tr = kept;
    }
    if (body.children[i] !== tr) body.insertBefore(tr, body.children[i] || null);
  });
  for (const tr of old.values()) tr.remove();
}

// patchCells gives kept the cells of fresh, replacing only those that
// differ (isEqualNode: the same elements, attributes and text): handlers
// depend only on the device id, which the row keeps, so an equal cell
// does the same.
function patchCells(kept, fresh) {
  const cells = [...fresh.children];
  cells.forEach((td, i) => {
    const was = kept.children[i];
    if (!was) kept.append(td);
    else if (!was.isEqualNode(td)) was.replaceWith(td);
  });
  while (kept.children.length > cells.length) kept.lastElementChild.remove();
}

function row(session, e, counts, writable) {
  const state = stateOf(e);
  const since = sinceOf(e);
  const disabled = state === 'disabled';
  const button = (name, fn, danger) => h('button', {
    type: 'button', class: danger ? 'small danger' : 'small',
    dataset: { focusKey: `${name}:${e.id}` },
    'aria-label': `${name} ${e.id}`,
    onclick: (ev) => busy(ev.currentTarget, () => fn(session, e.id)),
  }, name);
  return h('tr', { dataset: { device: e.id } },
    h('td', { class: 'id' }, e.id),
    h('td', null, h('span', { class: `state ${state}` }, state)),
    h('td', { title: localTime(since) }, ago(since)),
    h('td', null, state === 'connected' ? e.node : ''),
    h('td', null, e.record.authentication?.type || 'sas'),
    h('td', { class: 'num' }, String(counts.get(e.id) || 0)),
    writable ? h('td', null, h('div', { class: 'actions' },
      state === 'connected' ? h('a', {
        class: 'small', href: `#/terminal/${encodeURIComponent(e.id)}`,
        dataset: { focusKey: `Terminal:${e.id}` }, 'aria-label': `Terminal on ${e.id}`,
      }, 'Terminal') : null,
      disabled ? button('Enable', enable) : button('Disable', disable),
      (e.record.authentication?.type || 'sas') === 'sas' ? button('Rotate key', rotateKey) : null,
      button('Delete', remove, true))) : null);
}

// connectionString is what a device puts in its configuration.
function connectionString(session, d) {
  return `HostName=${session.host};DeviceId=${d.deviceId};SharedAccessKey=${d.authentication.symmetricKey.primaryKey}`;
}

// showOnce shows a device's connection string: the console never shows
// it again, as keys are not in the change feed.
function showOnce(session, title, d) {
  const cs = connectionString(session, d);
  return dialog(title, (close) => [
    h('p', null, `The connection string of ${d.deviceId}, shown this once: give it to the device (tether agent --device CONNSTR).`),
    h('pre', { class: 'secret', id: 'connection-string', tabindex: '0' }, cs),
    h('div', { class: 'buttons' }, copyButton(cs), h('button', { type: 'button', onclick: () => close(true) }, 'Done')),
  ]);
}

async function addDevice(session) {
  const created = await dialog('Add device', (close) => {
    const input = h('input', { type: 'text', id: 'new-device-id', required: true, maxlength: '128', autocomplete: 'off', spellcheck: 'false' });
    const err = h('p', { class: 'error', role: 'alert' });
    const submit = h('button', { type: 'submit', class: 'primary' }, 'Add');
    const form = h('form', {
      onsubmit: async (ev) => {
        ev.preventDefault();
        const id = input.value.trim();
        if (!idPattern.test(id)) {
          err.textContent = "A device id is 1 to 128 letters, digits and - . + % _ # * ? ! ( ) , : = @ $ '.";
          return;
        }
        err.textContent = '';
        await busy(submit, async () => {
          try {
            close(await call(session, 'PUT', devicePath(id), {
              body: { deviceId: id, status: 'enabled', authentication: { type: 'sas' } },
            }));
          } catch (e) {
            err.textContent = e.message;
          }
        });
      },
    },
    h('label', { for: 'new-device-id' }, 'Device id'), input, err,
    h('div', { class: 'buttons' }, h('button', { type: 'button', onclick: () => close(null) }, 'Cancel'), submit));
    queueMicrotask(() => input.focus());
    return form;
  });
  if (created) await showOnce(session, 'Device added', created);
}

// modify reads a device, changes it and writes it back with its etag, so
// that an edit made meanwhile elsewhere is not overwritten.
async function modify(session, id, change) {
  for (let attempt = 0; ; attempt++) {
    const d = await call(session, 'GET', devicePath(id));
    change(d);
    try {
      return await call(session, 'PUT', devicePath(id), { body: d, headers: { 'If-Match': `"${d.etag}"` } });
    } catch (e) {
      if (e.status !== 412 || attempt >= 3) throw e;
    }
  }
}

async function act(what, work) {
  try {
    await work();
    notify(what);
  } catch (e) {
    notify(`${what.replace(/\.$/, '')} failed: ${e.message}`, 'error');
  }
}

async function disable(session, id) {
  if (!await confirm('Disable device', `Disable ${id}? It is disconnected now, its streams end, and it cannot connect until enabled.`, 'Disable', true)) return;
  await act(`Disabled ${id}.`, () => modify(session, id, (d) => { d.status = 'disabled'; }));
}

async function enable(session, id) {
  if (!await confirm('Enable device', `Enable ${id}? It may connect again.`, 'Enable')) return;
  await act(`Enabled ${id}.`, () => modify(session, id, (d) => { d.status = 'enabled'; }));
}

function newKey() {
  const b = crypto.getRandomValues(new Uint8Array(32));
  let s = '';
  for (const c of b) s += String.fromCharCode(c);
  return btoa(s);
}

async function rotateKey(session, id) {
  if (!await confirm('Rotate key', `Give ${id} a new primary key? The old one stops working now, and the device's sessions that used it end.`, 'Rotate key', true)) return;
  let d;
  await act(`Rotated the key of ${id}.`, async () => {
    d = await modify(session, id, (doc) => {
      doc.authentication.symmetricKey = { ...doc.authentication.symmetricKey, primaryKey: newKey() };
    });
  });
  if (d) await showOnce(session, 'Key rotated', d);
}

async function remove(session, id) {
  if (!await confirm('Delete device', `Delete ${id}? Its identity and keys are gone for good; it is disconnected now.`, 'Delete', true)) return;
  await act(`Deleted ${id}.`, () => call(session, 'DELETE', devicePath(id), { headers: { 'If-Match': '*' } }));
}
