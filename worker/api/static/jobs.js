// One card per job, driven by its SSE events (queue position, progress, previews, cancel, results), and the
// session's history of results.

import * as api from "./api.js";
import { base64Bytes, pngText } from "./png.js";

const MIME = { png: "image/png", jpeg: "image/jpeg", webp: "image/webp" };
const STAGES = { encoding_prompt: "encoding the prompt", decoding: "decoding", encoding_image: "encoding the image" };
const HISTORY_KEY = "sd-worker.history";
const HISTORY_MAX = 48;

function seconds(ms) {
  return `${(ms / 1000).toFixed(1)} s`;
}

/**
 * A result image: its bytes, seed, infotext and the request that reproduces it alone
 * (`num_samples: 1, seed: <its seed>`, as the seeds contract promises).
 */
export function resultEntry(task, body, b64, format, seed) {
  const text = format === "png" ? pngText(base64Bytes(b64)) : {};
  return {
    task,
    body: { ...body, seed, num_samples: 1 },
    image: b64,
    format,
    seed,
    infotext: text.parameters || "",
    time: Date.now(),
  };
}

/** A figure for one result, with download, reuse-seed, reproduce and send-to actions. */
export function resultFigure(entry, actions) {
  const figure = document.getElementById("result-template").content.firstElementChild.cloneNode(true);
  const mime = MIME[entry.format] || "application/octet-stream";
  figure.querySelector("img").src = `data:${mime};base64,${entry.image}`;
  figure.querySelector("img").alt = `seed ${entry.seed}`;
  figure.querySelector(".seed").textContent = entry.seed;
  const download = figure.querySelector(".download");
  download.href = URL.createObjectURL(new Blob([base64Bytes(entry.image)], { type: mime }));
  download.download = `sd-worker-${entry.seed}.${entry.format}`;
  figure.querySelector(".infotext").textContent = entry.infotext || "(infotext is in PNG outputs only)";
  figure.querySelector(".reuse-seed").addEventListener("click", () => actions.reuseSeed(entry.seed));
  figure.querySelector(".reproduce").addEventListener("click", () => actions.reproduce(entry));
  const dataUrl = figure.querySelector("img").src;
  figure.querySelector(".to-img2img").addEventListener("click", () => actions.sendTo("img2img", dataUrl));
  figure.querySelector(".to-inpaint").addEventListener("click", () => actions.sendTo("inpaint", dataUrl));
  return figure;
}

/** The card of one submitted job. `on(name, data)` takes its SSE events. */
export class JobCard {
  constructor(container, task, body, actions) {
    this.task = task;
    this.body = body;
    this.actions = actions;
    this.jobId = null;
    this.finished = false;
    this.progressText = "";
    this.el = document.getElementById("job-template").content.firstElementChild.cloneNode(true);
    this.el.querySelector(".job-title").textContent = `${task} · ${body.prompt || ""}`;
    this.status = this.el.querySelector(".job-status");
    this.bar = this.el.querySelector("progress");
    this.preview = this.el.querySelector(".preview");
    this.cancelButton = this.el.querySelector(".cancel");
    this.cancelButton.disabled = true;
    this.cancelButton.addEventListener("click", () => this.cancel());
    container.prepend(this.el);
  }

  on(name, data) {
    const handler = {
      accepted: () => this._accepted(data),
      queued: () => this._set("queued", data.position ? `queued: ${data.position} ahead` : "queued: next in line"),
      started: () => this._set("running", `started · seeds ${data.seeds.join(", ")}`),
      stage: () => this._stage(data),
      progress: () => this._progress(data),
      preview: () => this._preview(data),
      complete: () => this._complete(data),
      error: () => this._error(data),
    }[name];
    if (handler) handler();
  }

  /** The stream ended: without a final event the connection was lost (the job may still be known). */
  streamEnded() {
    if (!this.finished) this._finish("failed", "the connection to the worker was lost before the job ended");
  }

  remove() {
    this.el.remove();
  }

  failed(message) {
    this._finish("failed", message);
  }

  async cancel() {
    this.cancelButton.disabled = true;
    this.status.textContent = "cancelling…";
    try {
      await api.cancelJob(this.jobId);
    } catch (error) {
      this.status.textContent = `cancel refused: ${error.message}`;
    }
  }

  _accepted(data) {
    this.jobId = data.job_id;
    this.el.dataset.jobId = data.job_id || "";
    this.cancelButton.disabled = !data.job_id;
    this._set("queued", "accepted");
  }

  _set(status, text) {
    this.el.dataset.status = status;
    this.status.textContent = text;
  }

  _stage(data) {
    if (data.stage === "denoising") return;
    const label = STAGES[data.stage] || data.stage;
    this._set("running", this.progressText ? `${this.progressText} · ${label}` : `${label}…`);
  }

  _progress(data) {
    this.bar.max = data.total_steps;
    this.bar.value = data.step;
    this.progressText = `step ${data.step} of ${data.total_steps}`;
    const eta = data.step < data.total_steps ? ` · ETA ${seconds(data.eta_ms)}` : "";
    this._set("running", `${this.progressText}${eta}`);
  }

  _preview(data) {
    this.preview.src = `data:image/jpeg;base64,${data.image}`;
    this.preview.alt = `preview at step ${data.step}`;
    this.preview.hidden = false;
  }

  _complete(data) {
    this.preview.hidden = true;
    this.bar.value = this.bar.max;
    const results = this.el.querySelector(".results");
    data.images.forEach((b64, index) => {
      const entry = resultEntry(this.task, this.body, b64, data.format, data.seeds[index]);
      results.append(resultFigure(entry, this.actions));
      this.actions.record(entry);
    });
    this._finish("completed", `done in ${seconds(data.elapsed_ms)} · ${data.width}×${data.height}`);
  }

  _error(data) {
    // cancelled, timeout, out_of_memory, …: the worker's own words
    this._finish(data.code === "cancelled" ? "cancelled" : "failed", `${data.code}: ${data.message}`);
  }

  _finish(status, text) {
    this.finished = true;
    this.cancelButton.disabled = true;
    this._set(status, text);
  }
}

/** This tab's results, newest first, kept in sessionStorage (the oldest are dropped when it is full). */
export class History {
  constructor(list, actions) {
    this.list = list;
    this.actions = actions;
    try {
      this.entries = JSON.parse(sessionStorage.getItem(HISTORY_KEY) || "[]");
    } catch {
      this.entries = [];
    }
    this.render();
  }

  add(entry) {
    this.entries.unshift(entry);
    this.entries.length = Math.min(this.entries.length, HISTORY_MAX);
    this._save();
    this.render();
  }

  clear() {
    this.entries = [];
    this._save();
    this.render();
  }

  render() {
    this.list.replaceChildren(
      ...this.entries.map((entry) => {
        const item = document.createElement("li");
        const image = document.createElement("img");
        image.src = `data:${MIME[entry.format]};base64,${entry.image}`;
        image.alt = `seed ${entry.seed}`;
        image.title = `${entry.task} · ${entry.body.prompt || ""}\nseed ${entry.seed} · click to reproduce`;
        image.addEventListener("click", () => this.actions.reproduce(entry));
        const caption = document.createElement("p");
        caption.textContent = `${entry.seed} · ${entry.body.prompt || ""}`;
        item.append(image, caption);
        return item;
      }),
    );
  }

  _save() {
    for (;;) {
      try {
        sessionStorage.setItem(HISTORY_KEY, JSON.stringify(this.entries));
        return;
      } catch {
        if (!this.entries.length) return;
        this.entries.pop(); // over the storage quota: forget the oldest
      }
    }
  }
}
