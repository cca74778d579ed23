// The Terminal page: a shell on a device in the browser, as tether shell
// gives one in a terminal. The page opens the device's stream itself, a
// WebSocket to the hub's one-request stream opening, and speaks the
// terminal framing of docs/protocol.md over it: a type byte, a big-endian
// uint16 length and the payload; a hello each way first, then the
// terminal's bytes both ways, the window's size from here and the shell's
// exit status from the device.
//
// A browser cannot set an Authorization header on a WebSocket, so the
// page's token travels as a subprotocol offered beside the one it speaks
// (tether.bearer.<base64url token>); the hub takes it from there, never
// selects it and never logs it. The screen is xterm.js, from npm
// (vendor-src, copied into vendor/ by go generate), loaded only here.

import { h, notify } from './dom.js';
import { store } from './store.js';

const greeting = 'tether-term/1';
const kind = { hello: 1, data: 2, resize: 3, exit: 4 };
const maxPayload = 0xffff;
const encoder = new TextEncoder();

// frame is one message of the terminal framing.
function frame(type, payload) {
  const b = new Uint8Array(3 + payload.length);
  b[0] = type;
  b[1] = payload.length >> 8;
  b[2] = payload.length & 0xff;
  b.set(payload, 3);
  return b;
}

function resizeFrame(rows, cols) {
  return frame(kind.resize, new Uint8Array([rows >> 8, rows & 0xff, cols >> 8, cols & 0xff]));
}

function base64url(s) {
  let bin = '';
  for (const b of encoder.encode(s)) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

// Frames reads frames out of the stream's messages, however the relay
// cut or joined them.
class Frames {
  constructor() {
    this.buf = new Uint8Array(0);
  }

  push(chunk) {
    const b = new Uint8Array(this.buf.length + chunk.length);
    b.set(this.buf);
    b.set(chunk, this.buf.length);
    this.buf = b;
  }

  // peekType is the next frame's type, before it is whole; -1 for none.
  peekType() {
    return this.buf.length > 0 ? this.buf[0] : -1;
  }

  next() {
    if (this.buf.length < 3) return null;
    const n = (this.buf[1] << 8) | this.buf[2];
    if (this.buf.length < 3 + n) return null;
    const f = { type: this.buf[0], payload: this.buf.slice(3, 3 + n) };
    this.buf = this.buf.slice(3 + n);
    return f;
  }
}

// Both of xterm.js's ways of styling its screen are inline styles, which
// the console's Content-Security-Policy refuses (style-src 'self', so that
// markup injected into a page could style nothing): <style> elements
// with the CSS it computes (colours, cell sizes), and style attributes
// set with setAttribute (24-bit colours). The same CSS goes through the
// CSSOM instead, which the policy leaves to the page's own scripts: a
// constructed stylesheet the document adopts, and the element's style.
// The console's own code makes no <style> and sets no style attribute, so
// nothing else takes these paths.
let shimmed = false;
function styleThroughCSSOM() {
  if (shimmed) return;
  shimmed = true;
  const create = Document.prototype.createElement;
  Document.prototype.createElement = function createElement(tag, options) {
    if (String(tag).toLowerCase() !== 'style') return create.call(this, tag, options);
    const doc = this;
    const sheet = new CSSStyleSheet();
    // An inert element stands where xterm.js puts its <style>.
    const el = create.call(doc, 'template');
    let css = '';
    Object.defineProperty(el, 'textContent', {
      get: () => css,
      set: (v) => {
        css = String(v ?? '');
        sheet.replaceSync(css);
      },
    });
    const remove = el.remove;
    el.remove = function removeStyle() {
      doc.adoptedStyleSheets = doc.adoptedStyleSheets.filter((s) => s !== sheet);
      remove.call(this);
    };
    doc.adoptedStyleSheets = [...doc.adoptedStyleSheets, sheet];
    return el;
  };
  const setAttribute = Element.prototype.setAttribute;
  Element.prototype.setAttribute = function setStyleAttribute(name, value) {
    if (String(name).toLowerCase() === 'style' && this.style) {
      this.style.cssText = String(value); // xterm.js's style attribute, through the CSSOM
      return;
    }
    setAttribute.call(this, name, value);
  };
}

function loadCSS() {
  if (document.querySelector('link[data-xterm]')) return;
  document.head.append(h('link', { rel: 'stylesheet', href: 'vendor/xterm.css', dataset: { xterm: '' } }));
}

// xtermModules loads xterm.js and its fit addon, the page made ready for
// them first (their stylesheet, their styles through the CSSOM): the
// Terminal's and the Replay's.
export async function xtermModules() {
  const [xterm, addon] = await Promise.all([import('../vendor/xterm.mjs'), import('../vendor/addon-fit.mjs')]);
  styleThroughCSSOM();
  loadCSS();
  return { xterm, addon };
}

// terminalPage is #/terminal/DEVICE, or #/terminal/DEVICE/STREAM for a
// shell served under another name than "shell".
export function terminalPage(session, main) {
  const m = /^#\/terminal\/([^/]+)(?:\/([^/]+))?$/.exec(location.hash) || [];
  const id = m[1] ? decodeURIComponent(m[1]) : '';
  const stream = m[2] ? decodeURIComponent(m[2]) : 'shell';
  const status = h('span', { class: 'term-status', id: 'terminal-status', role: 'status' }, 'Opening…');
  const screen = h('div', { class: 'term-screen', id: 'terminal' });
  const reconnect = h('button', { type: 'button', id: 'terminal-reconnect', hidden: true, onclick: () => connect() }, 'Reconnect');
  const copy = h('button', { type: 'button', class: 'small', title: 'Ctrl+Shift+C', onclick: () => copySelection() }, 'Copy');
  const paste = h('button', { type: 'button', class: 'small', title: 'Ctrl+Shift+V', onclick: () => pasteClipboard() }, 'Paste');
  main.replaceChildren(
    h('div', { class: 'toolbar term-bar' },
      h('a', { href: '#/devices' }, '‹ Devices'),
      h('h1', { class: 'term-title' }, 'Terminal ', h('span', { class: 'id' }, id), stream !== 'shell' ? ` (${stream})` : ''),
      status, h('span', { class: 'grow' }), copy, paste, reconnect),
    screen);
  if (!id) {
    status.textContent = 'No device named: open a terminal from the Devices page.';
    return () => {};
  }
  document.title = `Terminal ${id} · Tether`;

  let term = null;
  let fit = null;
  let ws = null;
  let left = false;
  const observer = new ResizeObserver(() => fit?.fit());

  function send(b) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(b);
  }

  function sendBytes(bytes) {
    for (let i = 0; i < bytes.length; i += maxPayload) send(frame(kind.data, bytes.subarray(i, i + maxPayload)));
  }

  async function copySelection() {
    const text = term?.getSelection() || '';
    if (!text) return;
    try {
      await navigator.clipboard.writeText(text);
    } catch (e) {
      notify(`Copy failed: ${e.message}`, 'error');
    }
  }

  async function pasteClipboard() {
    try {
      const text = await navigator.clipboard.readText();
      if (text) term?.paste(text);
    } catch (e) {
      notify(`Paste failed: ${e.message}`, 'error');
    }
    term?.focus();
  }

  function say(text, kindOf = 'info') {
    status.textContent = text;
    status.className = `term-status ${kindOf}`;
  }

  async function connect() {
    reconnect.hidden = true;
    term.reset();
    say(`Opening a shell on ${id}…`);
    let token;
    try {
      token = await session.authorization();
    } catch (e) {
      say(e.message, 'error');
      return;
    }
    if (left) return;
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const url = `${scheme}://${location.host}/twins/${encodeURIComponent(id)}/streams/${encodeURIComponent(stream)}?api-version=2020-09-30`;
    const sock = new WebSocket(url, ['tether-stream.v1', `tether.bearer.${base64url(token)}`]);
    ws = sock;
    sock.binaryType = 'arraybuffer';
    const frames = new Frames();
    let greeted = false;
    let ended = false;
    sock.onmessage = (ev) => {
      if (ws !== sock) return;
      frames.push(new Uint8Array(ev.data));
      if (!greeted && frames.peekType() !== -1 && frames.peekType() !== kind.hello) {
        ended = true;
        say(`Stream "${stream}" of ${id} is not a shell: its agent connects it to a port. A shell is --allow NAME=@shell.`, 'error');
        sock.close();
        return;
      }
      for (let f = frames.next(); f; f = frames.next()) {
        switch (f.type) {
          case kind.hello:
            if (greeted) break;
            if (!new TextDecoder().decode(f.payload).startsWith(greeting)) {
              ended = true;
              say(`Stream "${stream}" of ${id} speaks another version of the terminal protocol than ${greeting}.`, 'error');
              sock.close();
              return;
            }
            greeted = true;
            send(frame(kind.hello, encoder.encode(greeting)));
            send(resizeFrame(term.rows, term.cols));
            say(`Connected to ${id}`, 'ok');
            term.focus();
            break;
          case kind.data:
            term.write(f.payload);
            break;
          case kind.exit: {
            const v = new DataView(f.payload.buffer, f.payload.byteOffset, f.payload.byteLength);
            const code = f.payload.length >= 4 ? v.getInt32(0) : -1;
            const why = new TextDecoder().decode(f.payload.subarray(4));
            ended = true;
            say(why ? `The device ended the shell: ${why}` : `The shell exited with status ${code}.`, code === 0 && !why ? 'info' : 'error');
            break;
          }
          default:
            // A later version's frame: skipped.
        }
      }
    };
    sock.onclose = () => {
      if (ws !== sock || left) return;
      ws = null;
      reconnect.hidden = false;
      if (ended) return;
      if (!greeted) {
        const e = store.devices.get(id);
        const state = e?.state === 'Connected' ? '' : ` ${id} is not connected to the hub.`;
        say(`Could not open a shell on ${id}.${state} The hub or the device refused stream "${stream}": does the device's agent serve it (--allow ${stream}=@shell), and may policy ${session.keyName} open streams (ServiceConnect)?`, 'error');
        return;
      }
      say('The stream to the device ended.', 'error');
    };
  }

  (async () => {
    let xterm;
    let addon;
    try {
      ({ xterm, addon } = await xtermModules());
    } catch (e) {
      say(`Could not load the terminal: ${e.message}`, 'error');
      return;
    }
    if (left) return;
    term = new xterm.Terminal({
      cursorBlink: true,
      scrollback: 5000,
      fontFamily: 'ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace',
      fontSize: 14,
    });
    fit = new addon.FitAddon();
    term.loadAddon(fit);
    term.open(screen);
    // Ctrl+Shift+C and Ctrl+Shift+V copy and paste, as terminals do:
    // Ctrl+C and Ctrl+V go to the shell.
    term.attachCustomKeyEventHandler((e) => {
      if (e.type !== 'keydown' || !e.ctrlKey || !e.shiftKey) return true;
      if (e.code === 'KeyC') {
        copySelection();
        return false;
      }
      if (e.code === 'KeyV') {
        e.preventDefault();
        pasteClipboard();
        return false;
      }
      return true;
    });
    term.onData((s) => sendBytes(encoder.encode(s)));
    term.onBinary((s) => sendBytes(Uint8Array.from(s, (c) => c.charCodeAt(0) & 0xff)));
    // The size in the page too, for whoever checks what the device got.
    term.onResize(({ rows, cols }) => {
      screen.dataset.size = `${rows} ${cols}`;
      send(resizeFrame(rows, cols));
    });
    fit.fit();
    screen.dataset.size = `${term.rows} ${term.cols}`;
    observer.observe(screen);
    connect();
  })();

  return () => {
    left = true;
    observer.disconnect();
    const sock = ws;
    ws = null;
    sock?.close();
    term?.dispose();
  };
}
