// The Streams page: the streams open now on every hub node (GET
// /streams), read again every second, and ending one (DELETE
// /streams/{id}) for a policy allowed to open streams.

import { call } from './api.js';
import { h, every, confirm, notify, busy, duration, bytes, localTime } from './dom.js';
import { store, listen, refreshStreams } from './store.js';

export function streamsPage(session, main) {
  const body = h('tbody');
  const summary = h('p', { class: 'summary', 'aria-live': 'polite' });
  const filter = h('input', { type: 'search', placeholder: 'Filter by device or stream', 'aria-label': 'Filter by device or stream', oninput: render });
  main.replaceChildren(
    h('div', { class: 'toolbar' }, filter),
    h('div', { class: 'table-wrap' }, h('table', { class: 'streams' },
      h('thead', null, h('tr', null, ['Device', 'Stream', 'Policy', 'Node', 'Opened', 'Duration', 'State', 'To device', 'To service', ''].map((t) => h('th', { scope: 'col' }, t)))),
      body)),
    summary);
  let error = '';

  function render() {
    const q = filter.value.trim().toLowerCase();
    const list = store.streams.filter((s) => !q || s.deviceId.toLowerCase().includes(q) || s.name.toLowerCase().includes(q));
    const now = Date.now();
    body.replaceChildren(...list.map((s) => h('tr', { dataset: { stream: s.streamId } },
      h('td', { class: 'id' }, s.deviceId),
      h('td', null, s.name),
      h('td', null, s.policy || ''),
      h('td', null, s.node),
      h('td', null, localTime(s.opened)),
      h('td', null, duration(Math.max(0, now - Date.parse(s.opened)))),
      h('td', null, s.paired ? 'relaying' : 'waiting for a side'),
      h('td', { class: 'num', title: `${s.bytesToDevice} bytes` }, bytes(s.bytesToDevice)),
      h('td', { class: 'num', title: `${s.bytesToService} bytes` }, bytes(s.bytesToService)),
      h('td', null, store.canKill === false ? null : h('button', {
        type: 'button', class: 'small danger', 'aria-label': `End stream ${s.name} of ${s.deviceId}`,
        onclick: (ev) => busy(ev.currentTarget, () => kill(session, s)),
      }, 'End')))));
    summary.textContent = error ? `Cannot list the streams: ${error}`
      : `${list.length} open stream${list.length === 1 ? '' : 's'}` + (store.streamsRead ? `, as of ${new Date(store.streamsRead).toLocaleTimeString()}` : '');
  }

  const poll = async () => {
    try {
      await refreshStreams(session);
      error = '';
    } catch (e) {
      error = e.message;
      render();
    }
  };
  render();
  return every(1000, poll, listen(render));
}

async function kill(session, s) {
  if (!await confirm('End stream', `End stream ${s.name} of ${s.deviceId}? Both sides are disconnected now.`, 'End stream', true)) return;
  try {
    await call(session, 'DELETE', `/streams/${encodeURIComponent(s.streamId)}`);
    notify(`Ended stream ${s.name} of ${s.deviceId}.`);
    await refreshStreams(session);
  } catch (e) {
    notify(`Ending the stream failed: ${e.message}`, 'error');
  }
}
