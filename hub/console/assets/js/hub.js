// The Hub page: the nodes of the cluster (GET /nodes, which every node
// answers for itself), their health and version, and the devices and
// streams each holds.

import { call } from './api.js';
import { h, every, ago, localTime } from './dom.js';
import { store, listen } from './store.js';

export function hubPage(session, main) {
  const body = h('tbody');
  const summary = h('p', { class: 'summary', 'aria-live': 'polite' });
  const fleet = h('p', { class: 'fleet' });
  main.replaceChildren(
    h('h1', null, 'Hub ', h('span', { class: 'muted' }, session.host)),
    fleet,
    h('div', { class: 'table-wrap' }, h('table', { class: 'nodes' },
      h('thead', null, h('tr', null, ['Node', 'Health', 'Version', 'Started', 'Devices connected', 'Open streams'].map((t) => h('th', { scope: 'col' }, t)))),
      body)),
    summary);
  let nodes = [];
  let error = '';

  function render() {
    let total = 0;
    let connected = 0;
    let disabled = 0;
    for (const e of store.devices.values()) {
      if (!e.record) continue;
      total++;
      if (e.record.status === 'disabled') disabled++;
      else if (e.state === 'Connected') connected++;
    }
    fleet.textContent = store.synced
      ? `${total.toLocaleString()} devices: ${connected.toLocaleString()} connected, ${disabled.toLocaleString()} disabled.`
      : 'Reading the registry…';
    body.replaceChildren(...nodes.map((n) => h('tr', { dataset: { node: n.node } },
      h('td', { class: 'id', title: n.node }, n.name),
      h('td', null, h('span', { class: `health ${n.ready ? (n.draining ? 'draining' : 'ready') : 'failing'}` },
        n.ready ? (n.draining ? 'draining' : 'ready') : `not ready: ${n.readyError}`)),
      h('td', { title: n.goVersion }, n.commit ? `${n.version} (${n.commit})` : n.version),
      h('td', { title: localTime(n.started) }, ago(n.started)),
      h('td', { class: 'num' }, String(n.devices)),
      h('td', { class: 'num' }, String(n.streams)))));
    summary.textContent = error ? `Cannot list the nodes: ${error}` : `${nodes.length} node${nodes.length === 1 ? '' : 's'} answered.`;
  }

  const poll = async () => {
    try {
      nodes = await call(session, 'GET', '/nodes');
      error = '';
    } catch (e) {
      error = e.message;
    }
    render();
  };
  render();
  return every(5000, poll, listen(render));
}
