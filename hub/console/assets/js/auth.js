// Sign-in: the console signs its own SAS tokens, as the tether CLI does
// (package sas): HMAC-SHA256 with the policy's key over the URL-encoded
// resource, a newline and the expiry. The key stays in this tab's session
// storage and never leaves the browser; only tokens go to the hub. A
// sign-in link from `tether console` carries a token instead of a key, in
// the URL's fragment, which browsers never send to a server.

const storageKey = 'tether.console.session';

// A token is signed for this long and renewed this long before it ends.
const tokenTTL = 60 * 60;
const renewBefore = 5 * 60 * 1000;

// parseConnectionString reads an access policy's connection string:
// HostName=...;SharedAccessKeyName=...;SharedAccessKey=...
export function parseConnectionString(s) {
  const fields = {};
  for (const part of s.trim().split(';')) {
    if (part.trim() === '') continue;
    const i = part.indexOf('=');
    if (i < 0) throw new Error(`"${part.slice(0, 16)}" is not key=value`);
    fields[part.slice(0, i).trim().toLowerCase()] = part.slice(i + 1).trim();
  }
  if (fields.deviceid) {
    throw new Error("this is a device's connection string: sign in with an access policy's (it has SharedAccessKeyName)");
  }
  if (!fields.hostname) throw new Error('HostName is missing');
  if (!fields.sharedaccesskeyname) throw new Error('SharedAccessKeyName is missing');
  if (!fields.sharedaccesskey) throw new Error('SharedAccessKey is missing');
  checkKey(fields.sharedaccesskey);
  return { host: fields.hostname, keyName: fields.sharedaccesskeyname, key: fields.sharedaccesskey };
}

function checkKey(key) {
  let bytes;
  try {
    bytes = base64Decode(key);
  } catch {
    throw new Error('SharedAccessKey is not base64');
  }
  if (bytes.length === 0) throw new Error('SharedAccessKey is empty');
}

function base64Decode(s) {
  return Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
}

function base64Encode(bytes) {
  let bin = '';
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin);
}

// signToken returns a service token for host signed with the policy's
// base64 key, valid for ttl seconds, and when it expires (ms).
export async function signToken(host, keyName, key, ttl = tokenTTL) {
  const se = Math.floor(Date.now() / 1000) + ttl;
  const sr = encodeURIComponent(host);
  const k = await crypto.subtle.importKey('raw', base64Decode(key), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  const mac = await crypto.subtle.sign('HMAC', k, new TextEncoder().encode(`${sr}\n${se}`));
  const sig = encodeURIComponent(base64Encode(new Uint8Array(mac)));
  return {
    token: `SharedAccessSignature sr=${sr}&sig=${sig}&se=${se}&skn=${encodeURIComponent(keyName)}`,
    expiry: se * 1000,
  };
}

// parseToken reads what the console shows of a token: the hub it names,
// the policy and the expiry (ms). The hub checks the rest.
export function parseToken(token) {
  const t = token.trim();
  const prefix = 'SharedAccessSignature ';
  if (!t.startsWith(prefix)) throw new Error('not a SAS token (it starts with "SharedAccessSignature ")');
  const fields = {};
  for (const part of t.slice(prefix.length).split('&')) {
    const i = part.indexOf('=');
    if (i < 0) throw new Error('a field of the token is not key=value');
    fields[part.slice(0, i)] = part.slice(i + 1);
  }
  if (!fields.sr || !fields.sig || !fields.se) throw new Error('the token lacks sr, sig or se');
  if (!fields.skn) throw new Error("the token names no access policy (skn): a device's token cannot sign in");
  const se = Number(fields.se);
  if (!Number.isInteger(se)) throw new Error('the token\'s expiry (se) is not a number');
  return { token: t, host: decodeURIComponent(fields.sr), keyName: decodeURIComponent(fields.skn), expiry: se * 1000 };
}

// Session is who the console is signed in as: a policy's key, from which
// it signs tokens, or one token from a sign-in link.
export class Session {
  constructor(data) {
    this.data = data;
    this.cached = null;
  }

  static load() {
    const raw = sessionStorage.getItem(storageKey);
    if (!raw) return null;
    try {
      return new Session(JSON.parse(raw));
    } catch {
      sessionStorage.removeItem(storageKey);
      return null;
    }
  }

  static fromKey(host, keyName, key) {
    return new Session({ kind: 'key', host, keyName, key });
  }

  static fromToken(token) {
    const t = parseToken(token);
    if (t.expiry <= Date.now()) {
      throw new Error(`this sign-in link expired at ${new Date(t.expiry).toLocaleString()}: run tether console for a new one`);
    }
    return new Session({ kind: 'token', ...t });
  }

  save() {
    sessionStorage.setItem(storageKey, JSON.stringify(this.data));
  }

  static clear() {
    sessionStorage.removeItem(storageKey);
  }

  get keyName() {
    return this.data.keyName;
  }

  // host is the hub's name as the policy's connection string gives it:
  // what a device's connection string names too.
  get host() {
    return this.data.host;
  }

  // expiry is when the session ends (ms), or null for a key, which signs
  // new tokens as long as the tab lives.
  get expiry() {
    return this.data.kind === 'token' ? this.data.expiry : null;
  }

  // authorization is the Authorization header of the next call.
  async authorization() {
    if (this.data.kind === 'token') {
      if (this.data.expiry <= Date.now()) throw new SessionExpired(this.data.expiry);
      return this.data.token;
    }
    if (!this.cached || this.cached.expiry - renewBefore <= Date.now()) {
      this.cached = await signToken(this.data.host, this.data.keyName, this.data.key);
    }
    return this.cached.token;
  }
}

// SessionExpired is the error of a call made with a sign-in link's token
// once it expired.
export class SessionExpired extends Error {
  constructor(expiry) {
    super(`the sign-in link's token expired at ${new Date(expiry).toLocaleString()}: sign in again`);
    this.name = 'SessionExpired';
  }
}
