// The console's only way to the gateway: its documented HTTP API, with the key in `Authorization: Bearer`.
// The key lives in this tab's session storage: never in a URL or a cookie, gone when the tab closes.

const KEY = 'thresher.apiKey';

export const session = {
  get key() { return sessionStorage.getItem(KEY); },
  set key(value) { sessionStorage.setItem(KEY, value); },
  forget() { sessionStorage.removeItem(KEY); caller.name = null; caller.scopes = []; },
};

// Whose key this is (GET /v1/key): the console shows and offers only what its scopes allow.
export const caller = { name: null, scopes: [] };
export const may = (scope) => caller.scopes.includes('admin') || caller.scopes.includes(scope);
// Stopping and retrying a job: an admin key, or the submit key that submitted it.
export const mayChange = (job) => may('submit') && (may('admin') || job.owner === caller.name);

export async function identify() {
  const key = await call('GET', '/v1/key');
  caller.name = key.name;
  caller.scopes = key.scopes;
  return key;
}

class ApiError extends Error {
  constructor(status, kind, message) {
    super(message);
    this.status = status;
    this.kind = kind;
  }
}

function headers(extra = {}) {
  return { Authorization: `Bearer ${session.key}`, ...extra };
}

async function failure(response) {
  const text = await response.text();
  try {
    const error = JSON.parse(text);
    return new ApiError(response.status, error.kind, error.message);
  } catch {
    // A dry run's failed check is plain text, as Cortex answered it: the message between two newlines.
    return new ApiError(response.status, 'invalid', text.trim() || `${response.status} ${response.statusText}`);
  }
}

// One call; JSON answers are parsed, text ones (a dry run's) returned as text. Errors throw an ApiError.
export async function call(method, path, body) {
  const options = { method, headers: headers(body === undefined ? {} : { 'Content-Type': 'application/json' }) };
  if (body !== undefined) options.body = body;
  const response = await fetch(path, options);
  if (!response.ok) throw await failure(response);
  const type = response.headers.get('Content-Type') ?? '';
  return type.startsWith('application/json') ? response.json() : response.text();
}

// A streamed answer, a line at a time as it arrives. fetch() and not EventSource, which cannot send the key in a
// header; `signal` ends it when the page is left.
export async function readLines(path, signal, onLine) {
  const response = await fetch(path, { headers: headers(), signal });
  if (!response.ok) throw await failure(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let rest = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    const lines = (rest + value).split('\n');
    rest = lines.pop();
    lines.forEach(onLine);
  }
  if (rest) onLine(rest);
}

// Server-sent events (`event:` and `data:` lines, a blank line after each) with JSON data, as the gateway sends them.
export function readEvents(path, signal, onEvent) {
  let event = 'message';
  let data = [];
  return readLines(path, signal, (line) => {
    if (line.startsWith('event:')) event = line.slice(6).trim();
    else if (line.startsWith('data:')) data.push(line.slice(5).trimStart());
    else if (line === '' && data.length) {
      onEvent(event, JSON.parse(data.join('\n')));
      event = 'message';
      data = [];
    }
  });
}
