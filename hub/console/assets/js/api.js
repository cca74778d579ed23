// The hub's REST API, as the console calls it: same origin, the
// Authorization header on every call, no cookies, and the hub's own error
// message when it says no.

// HubError is a call the hub answered with an error: status, Azure's
// error code and the hub's message.
export class HubError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = 'HubError';
    this.status = status;
    this.code = code;
  }
}

// errorOf reads the hub's answer to a failed call: Azure's shape nests a
// JSON document in the Message string; plain text otherwise.
async function errorOf(res) {
  const code = res.headers.get('iothub-errorcode') || '';
  const text = await res.text();
  let message = text.trim();
  try {
    const outer = JSON.parse(text);
    message = outer.Message || message;
    try {
      const inner = JSON.parse(outer.Message);
      message = inner.message || message;
    } catch {
      // Message was plain text.
    }
  } catch {
    // Not JSON: the text is the message.
  }
  if (!message) message = `${res.status} ${res.statusText}`;
  return new HubError(res.status, code, message);
}

async function request(session, method, path, { body, headers = {}, signal } = {}) {
  const h = { Authorization: await session.authorization(), Accept: 'application/json', ...headers };
  if (body !== undefined) h['Content-Type'] = 'application/json; charset=utf-8';
  let res;
  try {
    res = await fetch(path, {
      method,
      headers: h,
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
      signal,
      credentials: 'omit',
      cache: 'no-store',
      redirect: 'error',
    });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new Error(`the hub did not answer (${e.message})`);
  }
  if (!res.ok) throw await errorOf(res);
  return res;
}

// call makes one REST call and returns the decoded JSON answer, or null
// for an answer without a body.
export async function call(session, method, path, opts) {
  const res = await request(session, method, path, opts);
  const text = await res.text();
  return text ? JSON.parse(text) : null;
}

// text makes one GET and returns the answer's body as text: a terminal
// recording (GET /streams/ID/recording).
export async function text(session, path, signal) {
  const res = await request(session, 'GET', path, { signal, headers: { Accept: '*/*' } });
  return res.text();
}

// lines calls path and yields each JSON line of its answer as it comes:
// the change feed (GET /events) and the stream logs (GET /streamlogs).
export async function* lines(session, path, signal) {
  const res = await request(session, 'GET', path, { signal, headers: { Accept: 'application/x-ndjson' } });
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (line.trim() !== '') yield JSON.parse(line);
      }
    }
  } finally {
    reader.releaseLock();
  }
}

export function devicePath(id) {
  return `/devices/${encodeURIComponent(id)}`;
}
