// The console's shell: sign-in, the navigation between pages, and the
// session's end. Pages are modules that fill <main> and return a function
// that stops what they started (timers, requests).

import { Session, SessionExpired, parseConnectionString } from './auth.js';
import { call, HubError } from './api.js';
import { h, notify } from './dom.js';
import { store, start, stop, listen } from './store.js';
import { devicesPage } from './devices.js';
import { streamsPage } from './streams.js';
import { logsPage } from './logs.js';
import { hubPage } from './hub.js';
import { terminalPage } from './terminal.js';
import { replayPage } from './replay.js';

const pages = {
  devices: { title: 'Devices', show: devicesPage },
  streams: { title: 'Streams', show: streamsPage },
  logs: { title: 'Logs', show: logsPage },
  hub: { title: 'Hub', show: hubPage },
  terminal: { title: 'Terminal', show: terminalPage },
  replay: { title: 'Replay', show: replayPage },
};

let session = null;
let leave = null;

const main = document.getElementById('page');
const nav = document.getElementById('nav');
const who = document.getElementById('who');

// takeLinkToken signs in with the token of a sign-in link
// (#token=SharedAccessSignature...) and takes it out of the address bar
// and the history at once.
function takeLinkToken() {
  const m = /^#token=(.+)$/.exec(location.hash);
  if (!m) return null;
  history.replaceState(null, '', `${location.pathname}#/devices`);
  return Session.fromToken(decodeURIComponent(m[1]));
}

function signOut(message, kind) {
  Session.clear();
  session = null;
  stop();
  showSignIn(message, kind);
}

function showSignIn(message, kind = 'error') {
  if (leave) leave();
  leave = null;
  nav.hidden = true;
  who.replaceChildren();
  document.title = 'Sign in · Tether';
  const err = h('p', { class: 'error', role: 'alert', id: 'signin-error' }, message || '');
  if (kind !== 'error' && message) err.className = 'info';
  const connstr = h('textarea', {
    id: 'connstr', rows: '3', autocomplete: 'off', spellcheck: 'false',
    placeholder: 'HostName=…;SharedAccessKeyName=…;SharedAccessKey=…',
  });
  const keyName = h('input', { id: 'policy-name', type: 'text', autocomplete: 'off', spellcheck: 'false' });
  const key = h('input', { id: 'policy-key', type: 'password', autocomplete: 'off' });
  const form = h('form', {
    class: 'signin',
    onsubmit: (ev) => {
      ev.preventDefault();
      try {
        let s;
        if (connstr.value.trim() !== '') {
          const c = parseConnectionString(connstr.value);
          s = Session.fromKey(c.host, c.keyName, c.key);
        } else if (keyName.value.trim() !== '' && key.value.trim() !== '') {
          parseConnectionString(`HostName=${location.host};SharedAccessKeyName=${keyName.value.trim()};SharedAccessKey=${key.value.trim()}`);
          s = Session.fromKey(location.host, keyName.value.trim(), key.value.trim());
        } else {
          throw new Error("give a policy's connection string, or its name and key");
        }
        signIn(s);
      } catch (e) {
        err.textContent = e.message;
      }
    },
  },
  h('h1', null, 'Sign in to Tether'),
  h('p', null, 'Run ', h('code', null, 'tether console'), ' for a sign-in link, or give an access policy. Its key stays in this tab (session storage) and is never sent: the console signs its own tokens.'),
  h('label', { for: 'connstr' }, "Policy's connection string"), connstr,
  h('p', { class: 'or' }, 'or'),
  h('div', { class: 'pair' },
    h('div', null, h('label', { for: 'policy-name' }, 'Policy name'), keyName),
    h('div', null, h('label', { for: 'policy-key' }, 'Key'), key)),
  err,
  h('div', { class: 'buttons' }, h('button', { type: 'submit', class: 'primary' }, 'Sign in')));
  main.replaceChildren(form);
  connstr.focus();
}

// signIn checks the policy with one read before it shows anything: the
// console needs RegistryRead, and a wrong key, a renewed one or an
// expired link is better said on the sign-in form than on every page.
async function signIn(s) {
  try {
    await call(s, 'GET', '/devices?top=1');
  } catch (e) {
    if (e instanceof HubError && e.status === 401) {
      Session.clear();
      showSignIn(`The hub refused policy ${s.keyName} (${e.message}): its key is wrong or was renewed, the link expired, or the policy lacks RegistryRead, which the console needs.`);
      return;
    }
    if (e instanceof SessionExpired) {
      Session.clear();
      showSignIn(e.message);
      return;
    }
    // The hub is unreachable now: the pages say so, and retry.
  }
  session = s;
  session.save();
  start(session, (e) => signOut(e.message));
  nav.hidden = false;
  const expires = session.expiry ? h('span', { class: 'muted' }, ` until ${new Date(session.expiry).toLocaleTimeString()}`) : null;
  const badge = h('span', { class: 'badge', id: 'readonly-badge', hidden: true }, 'read-only');
  who.replaceChildren(...[
    h('span', { id: 'policy' }, session.keyName), expires, badge,
    h('span', { class: 'feed', id: 'feed' }),
    h('button', { type: 'button', class: 'link', onclick: () => signOut('Signed out.', 'info') }, 'Sign out'),
  ].filter(Boolean));
  if (!/^#\/\w+/.test(location.hash)) history.replaceState(null, '', `${location.pathname}#/devices`);
  route();
}

function showFeed() {
  const el = document.getElementById('feed');
  if (!el) return;
  el.className = `feed ${store.feed}`;
  el.textContent = { connecting: 'connecting', live: 'live', down: 'reconnecting' }[store.feed];
  el.title = store.feedError;
  const badge = document.getElementById('readonly-badge');
  if (badge) badge.hidden = store.canWrite !== false;
}

function route() {
  if (!session) return;
  const name = (/^#\/(\w+)/.exec(location.hash) || [])[1];
  const page = pages[name] || pages.devices;
  if (leave) leave();
  notify('');
  for (const a of nav.querySelectorAll('a')) {
    if (a.dataset.page === (pages[name] ? name : 'devices')) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  document.title = `${page.title} · Tether`;
  leave = page.show(session, main);
  main.focus({ preventScroll: true });
}

window.addEventListener('hashchange', () => {
  if (/^#token=/.test(location.hash)) {
    boot();
    return;
  }
  route();
});
listen(showFeed);

function boot() {
  let s = null;
  try {
    s = takeLinkToken();
  } catch (e) {
    showSignIn(e.message);
    return;
  }
  s = s || Session.load();
  if (!s) {
    showSignIn();
    return;
  }
  if (s.expiry && s.expiry <= Date.now()) {
    Session.clear();
    showSignIn('The sign-in link expired: run tether console for a new one, or give a policy.');
    return;
  }
  signIn(s);
}

boot();
