// The worker's native API from a browser: the API key, JSON calls, and generation routes read as SSE streams.
// EventSource cannot POST, so a generation is a fetch() whose body is read frame by frame.

const KEY_STORAGE = "sd-worker.api-key";

/** A refusal from the worker: its status, error code, message and (when it names one) the field. */
export class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field || null;
  }
}

/** The key saved in this browser ("" when none). It goes in the Authorization header, never in a URL. */
export function storedKey() {
  return localStorage.getItem(KEY_STORAGE) || "";
}

export function storeKey(key) {
  if (key) localStorage.setItem(KEY_STORAGE, key);
  else localStorage.removeItem(KEY_STORAGE);
}

function headers(extra = {}) {
  const key = storedKey();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

async function refusal(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON (a proxy's page): the status line is all there is
  }
  const error = (body && body.error) || {};
  const message = error.message || `${response.status} ${response.statusText}`;
  return new ApiError(response.status, error.code || `http_${response.status}`, message, error.field);
}

/** GET a JSON document, or throw ApiError. */
export async function getJSON(path) {
  const response = await fetch(path, { headers: headers({ Accept: "application/json" }) });
  if (!response.ok) throw await refusal(response);
  return response.json();
}

/** DELETE /v1/jobs/{id}: cancel that job only. */
export async function cancelJob(jobId) {
  const response = await fetch(`/v1/jobs/${encodeURIComponent(jobId)}`, { method: "DELETE", headers: headers() });
  if (!response.ok) throw await refusal(response);
  return response.json();
}

/**
 * POST a generation route and call onEvent(name, data) for every SSE event, starting with a local
 * "accepted" event that carries the X-Job-Id header. Resolves when the stream ends; a refusal before the
 * stream starts throws ApiError (with the field the worker named).
 */
export async function generate(route, body, onEvent) {
  const response = await fetch(route, {
    method: "POST",
    headers: headers({ "Content-Type": "application/json", Accept: "text/event-stream" }),
    body: JSON.stringify(body),
  });
  if (!response.ok) throw await refusal(response);
  onEvent("accepted", { job_id: response.headers.get("X-Job-Id") });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = parseFrame(buffer.slice(0, end));
      buffer = buffer.slice(end + 2);
      if (event) onEvent(event.name, event.data);
    }
  }
}

/** One SSE frame → {name, data}; comments (keep-alives) and frames without data → null. */
export function parseFrame(frame) {
  let name = "message";
  const data = [];
  for (const line of frame.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") name = value;
    else if (field === "data") data.push(value);
  }
  return data.length ? { name, data: JSON.parse(data.join("\n")) } : null;
}
