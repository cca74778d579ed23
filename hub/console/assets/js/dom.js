// Building the page. Everything the hub says (device ids, stream names,
// messages) goes into the page as text nodes or attribute values, never
// as HTML: nothing here parses markup, so a name holding HTML shows as
// the characters it is.

// h makes an element: h('a', {class: 'x', onclick: fn}, 'text', child).
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) {
      el.addEventListener(k.slice(2), v);
    } else if (k === 'class') {
      el.className = v;
    } else if (k === 'dataset') {
      Object.assign(el.dataset, v);
    } else if (k === 'value' || k === 'checked') {
      el[k] = v;
    } else {
      el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

// dialog shows a modal dialog built by body(close) and resolves with what
// close is called with; Escape closes it with null.
export function dialog(title, body) {
  return new Promise((resolve) => {
    const d = h('dialog', { class: 'dialog', 'aria-label': title });
    let done = false;
    const close = (v) => {
      if (done) return;
      done = true;
      d.close();
      d.remove();
      resolve(v);
    };
    d.addEventListener('cancel', (e) => {
      e.preventDefault();
      close(null);
    });
    append(d, [h('h2', null, title), body(close)]);
    document.body.append(d);
    d.showModal();
  });
}

// confirm asks a yes or no question; yes is the action's own name.
export function confirm(title, text, action, danger = false) {
  return dialog(title, (close) => [
    h('p', null, text),
    h('div', { class: 'buttons' },
      h('button', { type: 'button', onclick: () => close(false) }, 'Cancel'),
      h('button', { type: 'button', class: danger ? 'danger' : 'primary', onclick: () => close(true) }, action)),
  ]).then((v) => v === true);
}

// notify shows a message in the page's status area; an error stays until
// dismissed or replaced, the rest for a few seconds.
let noticeTimer = null;
export function notify(message, kind = 'info') {
  const area = document.getElementById('notice');
  clearTimeout(noticeTimer);
  area.replaceChildren();
  if (!message) return;
  area.append(h('div', { class: `notice ${kind}`, role: kind === 'error' ? 'alert' : 'status' },
    h('span', null, message),
    h('button', { type: 'button', class: 'link', 'aria-label': 'Dismiss', onclick: () => area.replaceChildren() }, '×')));
  if (kind !== 'error') noticeTimer = setTimeout(() => area.replaceChildren(), 5000);
}

// busy disables button while work runs: no spinner outlives its request.
export async function busy(button, work) {
  button.disabled = true;
  button.setAttribute('aria-busy', 'true');
  try {
    return await work();
  } finally {
    button.disabled = false;
    button.removeAttribute('aria-busy');
  }
}

const zeroTime = '0001-01-01T00:00:00Z';

// ago is how long ago t (an RFC 3339 time) was, in words.
export function ago(t, now = Date.now()) {
  if (!t || t === zeroTime) return 'never';
  const ms = now - Date.parse(t);
  if (Number.isNaN(ms)) return '';
  return `${duration(Math.max(ms, 0))} ago`;
}

// duration writes ms as the two largest units: 3 h 12 min.
export function duration(ms) {
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  const hr = Math.floor(m / 60);
  if (hr < 48) return `${hr} h ${m % 60} min`;
  return `${Math.floor(hr / 24)} d ${hr % 24} h`;
}

export function localTime(t) {
  if (!t || t === zeroTime) return '';
  return new Date(t).toLocaleString();
}

// bytes writes n bytes in binary units.
export function bytes(n) {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = -1;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[u]}`;
}

// copyButton copies text to the clipboard, and says so.
export function copyButton(text, label = 'Copy') {
  const b = h('button', { type: 'button', class: 'primary' }, label);
  b.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(text);
      b.textContent = 'Copied';
    } catch {
      b.textContent = 'Copy failed: select the text';
    }
  });
  return b;
}

// every runs fn now and then every ms; the returned function stops it,
// and with it whatever else the page started (its listeners).
export function every(ms, fn, ...alsoStop) {
  fn();
  const timer = setInterval(fn, ms);
  return () => {
    clearInterval(timer);
    for (const stop of alsoStop) stop();
  };
}
