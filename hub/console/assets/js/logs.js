// The Logs page: the stream logs with the filters of `tether logs`
// (device, since, last N) and the result, a live tail (follow=true,
// resumed after the last record seen), and a download of what is shown
// as JSON lines, in the hub's shape.

import { lines } from './api.js';
import { h, notify, localTime, bytes } from './dom.js';

// Records kept at most: the tail drops the oldest past it.
const keep = 10000;
// Rows drawn at most, newest first.
const drawn = 500;

const view = { device: '', since: '1h', last: '', result: '' };

const results = ['accepted', 'rejected', 'offline', 'timedOut', 'error', 'interrupted'];

function props(rec) {
  try {
    return JSON.parse(rec.properties);
  } catch {
    return {};
  }
}

export function logsPage(session, main) {
  let records = [];
  let abort = null;
  let tailing = false;

  const device = h('input', { type: 'search', id: 'log-device', placeholder: 'any device', value: view.device, spellcheck: 'false' });
  const since = h('input', { type: 'text', id: 'log-since', placeholder: '15m, 2d or a time', value: view.since, spellcheck: 'false' });
  const last = h('input', { type: 'number', id: 'log-last', min: '1', max: '100000', placeholder: 'all', value: view.last });
  const result = h('select', { id: 'log-result', onchange: () => { view.result = result.value; render(); } },
    h('option', { value: '' }, 'any result'), results.map((r) => h('option', { value: r }, r)));
  result.value = view.result;
  const load = h('button', { type: 'submit', class: 'primary' }, 'Show');
  const tail = h('button', { type: 'button', id: 'log-tail', 'aria-pressed': 'false', onclick: () => (tailing ? stopTail() : read(true)) }, 'Live tail');
  const download = h('button', { type: 'button', id: 'log-download', onclick: save }, 'Download JSON lines');
  const body = h('tbody');
  const summary = h('p', { class: 'summary', 'aria-live': 'polite' });

  const form = h('form', { class: 'toolbar filters', onsubmit: (ev) => { ev.preventDefault(); read(false); } },
    h('label', null, 'Device ', device),
    h('label', null, 'Since ', since),
    h('label', null, 'Last ', last),
    h('label', null, 'Result ', result),
    load, tail, h('span', { class: 'grow' }), download);
  main.replaceChildren(form,
    h('div', { class: 'table-wrap' }, h('table', { class: 'logs' },
      h('thead', null, h('tr', null, ['Time', 'Device', 'Stream', 'Result', 'Policy', 'Node', 'Lifetime', 'To device', 'To service', 'Closed by', 'Description'].map((t) => h('th', { scope: 'col' }, t)))),
      body)),
    summary);

  function shown() {
    return view.result ? records.filter((r) => props(r).result === view.result) : records;
  }

  function render() {
    const list = shown();
    const rows = [];
    for (let i = list.length - 1; i >= 0 && rows.length < drawn; i--) {
      const r = list[i];
      const p = props(r);
      rows.push(h('tr', { class: r.resultType === 'Success' ? '' : 'failure' },
        h('td', null, localTime(r.time)),
        h('td', { class: 'id' }, p.deviceId || ''),
        h('td', null, p.requestName || '',
          p.recorded && p.streamId ? [' ', h('a', { class: 'replay', href: `#/replay/${encodeURIComponent(p.streamId)}`, title: `Replay the terminal session ${p.streamId}` }, 'Replay')] : null),
        h('td', null, h('span', { class: `result ${p.result || ''}` }, p.result || '')),
        h('td', null, p.policy || ''),
        h('td', null, p.node || ''),
        h('td', { class: 'num' }, p.lifetimeMs ? `${(p.lifetimeMs / 1000).toFixed(1)} s` : ''),
        h('td', { class: 'num' }, bytes(p.bytesToDevice || 0)),
        h('td', { class: 'num' }, bytes(p.bytesToService || 0)),
        h('td', null, p.closedBy || ''),
        h('td', { class: 'desc' }, [r.resultDescription, p.closeReason ? ` (${p.closeReason})` : ''].join(''))));
    }
    body.replaceChildren(...rows);
    summary.textContent = `${list.length.toLocaleString()} record${list.length === 1 ? '' : 's'}` +
      (list.length > drawn ? `, the newest ${drawn} drawn (download for all)` : '') +
      (tailing ? '; following new ones' : '');
  }

  function query(follow) {
    view.device = device.value.trim();
    view.since = since.value.trim();
    view.last = last.value.trim();
    const q = new URLSearchParams();
    if (view.device) q.set('deviceId', view.device);
    if (follow && records.length > 0) {
      q.set('after', String(records[records.length - 1].sequence));
    } else {
      if (view.since) q.set('since', view.since);
      if (view.last) q.set('last', view.last);
    }
    if (follow) q.set('follow', 'true');
    return `/streamlogs?${q}`;
  }

  async function read(follow) {
    if (abort) abort.abort();
    const ctl = new AbortController();
    abort = ctl;
    if (!follow) records = [];
    tailing = follow;
    tail.setAttribute('aria-pressed', String(follow));
    tail.textContent = follow ? 'Stop tail' : 'Live tail';
    load.disabled = true;
    render();
    let pending = false;
    try {
      for await (const rec of lines(session, query(follow), ctl.signal)) {
        records.push(rec);
        if (records.length > keep) records.splice(0, records.length - keep);
        if (!pending) {
          pending = true;
          requestAnimationFrame(() => { pending = false; render(); });
        }
      }
    } catch (e) {
      if (!ctl.signal.aborted) notify(`Reading the stream logs failed: ${e.message}`, 'error');
    } finally {
      if (abort === ctl) {
        abort = null;
        tailing = false;
        tail.setAttribute('aria-pressed', 'false');
        tail.textContent = 'Live tail';
      }
      load.disabled = false;
      render();
    }
  }

  function stopTail() {
    if (abort) abort.abort();
  }

  function save() {
    const text = shown().map((r) => JSON.stringify(r)).join('\n') + '\n';
    const url = URL.createObjectURL(new Blob([text], { type: 'application/x-ndjson' }));
    const a = h('a', { href: url, download: `tether-streamlogs-${new Date().toISOString().replace(/[:.]/g, '-')}.jsonl` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  read(false);
  return () => {
    if (abort) abort.abort();
  };
}
