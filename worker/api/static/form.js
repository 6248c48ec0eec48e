// The generation form: filled from /v1/capabilities, read into a native request body, refilled by
// "reproduce", and the worker's errors shown next to the field they name.

const $ = (id) => document.getElementById(id);
const TASK_FIELDS = ["prompt", "negative_prompt", "width", "height", "steps", "guidance_scale", "num_samples"];

function number(id) {
  const value = $(id).valueAsNumber;
  return Number.isNaN(value) ? undefined : value;
}

export class GenerationForm {
  constructor(form, editor) {
    this.form = form;
    this.editor = editor;
    this.caps = null;
    $("random-seed").addEventListener("change", () => this._seedMode());
    $("native-size").addEventListener("click", () => this.setSize(this.caps.size.native));
    $("strength").addEventListener("input", () => this._strengthLabel());
    $("brush").addEventListener("input", () => this._brush());
    $("erase").addEventListener("change", () => (editor.erasing = $("erase").checked));
    $("clear-mask").addEventListener("click", () => editor.clear());
    for (const radio of form.querySelectorAll("input[name=task]")) {
      radio.addEventListener("change", () => this._showTask(true));
    }
    // a value edited after an error: that error is stale
    form.addEventListener("input", (event) => this._clearField(event.target.closest(".field")));
  }

  /** Set every control's range, default and choices from the capabilities document. */
  configure(caps) {
    this.caps = caps;
    const { size, defaults, limits } = caps;
    for (const id of ["width", "height"]) {
      Object.assign($(id), { min: size.multiple, step: size.multiple });
    }
    this.setSize(size.native);
    $("size-hint").textContent =
      `${caps.family} draws at ${size.native.width}×${size.native.height} ` +
      `(max ${size.max.width}×${size.max.height}, multiples of ${size.multiple})`;
    Object.assign($("steps"), { max: limits.max_steps, value: defaults.steps });
    const guidance = $("guidance_scale");
    guidance.value = caps.fixed_guidance ?? defaults.guidance_scale;
    guidance.readOnly = caps.fixed_guidance !== null;
    guidance.title = guidance.readOnly ? `${caps.family} is distilled for guidance ${caps.fixed_guidance} only` : "";
    const own = defaults.model_scheduler ? `default (${defaults.model_scheduler})` : "model default";
    $("scheduler").replaceChildren(new Option(own, ""), ...caps.schedulers.map((s) => new Option(s.label, s.name)));
    Object.assign($("num_samples"), { max: limits.max_samples, value: defaults.num_samples });
    Object.assign($("seed"), { max: limits.seed_max });
    for (const radio of this.form.querySelectorAll("input[name=task]")) {
      radio.disabled = !caps.tasks.includes(radio.value);
    }
    this._loras(caps.loras);
    this._showTask(true);
  }

  get task() {
    return this.form.querySelector("input[name=task]:checked").value;
  }

  set task(value) {
    this.form.querySelector(`input[name=task][value="${value}"]`).checked = true;
    this._showTask(false);
  }

  setSize({ width, height }) {
    $("width").value = width;
    $("height").value = height;
  }

  /** The image size to ask for with a source image: its own, scaled down into the family's maximum. */
  fitSize({ width, height }) {
    const { max, multiple } = this.caps.size;
    const scale = Math.min(1, max.width / width, max.height / height);
    const round = (value) => Math.max(multiple, Math.floor((value * scale) / multiple) * multiple);
    this.setSize({ width: round(width), height: round(height) });
  }

  /** {task, body} for the native route, or null after showing why the page will not send it. */
  request() {
    if (!this.caps) {
      this.showError({ message: "the worker's capabilities could not be read; see the top of the page" });
      return null;
    }
    const task = this.task;
    const body = { prompt: $("prompt").value };
    if ($("negative_prompt").value) body.negative_prompt = $("negative_prompt").value;
    for (const id of ["width", "height", "steps", "guidance_scale", "num_samples"]) {
      if (number(id) !== undefined) body[id] = number(id);
    }
    if ($("scheduler").value) body.scheduler = $("scheduler").value;
    body.seed = $("random-seed").checked ? -1 : (number("seed") ?? -1);
    body.loras = [...$("loras").querySelectorAll(".lora")]
      .filter((row) => row.querySelector("input[type=checkbox]").checked)
      .map((row) => ({ name: row.dataset.name, weight: row.querySelector("input[type=number]").valueAsNumber }));
    if ($("previews").checked) body.preview_every = Math.max(1, Math.round((body.steps || 20) / 10));
    const { native, max, max_pixels: maxPixels } = this.caps.size;
    if (body.width * body.height > maxPixels) {
      // the server's words for this refusal (a pixel count, like its check), said before anything is sent
      const message = `the ${this.caps.family} model draws at ${native.width}×${native.height} (max ${max.width}×${max.height})`;
      this.showError({ field: "width", message });
      return null;
    }
    if (task !== "txt2img") {
      if (!this.editor.source) {
        this.showError({ field: "image", message: "choose or drop an image first" });
        return null;
      }
      body.image = this.editor.source;
      body.strength = number("strength");
    }
    if (task === "inpaint") {
      if (!this.editor.painted) {
        this.showError({ field: "mask", message: "paint the area to repaint on the image first" });
        return null;
      }
      body.mask = this.editor.maskDataUrl();
    }
    return { task, body };
  }

  /** Refill the form from a request body ("reproduce"): same task, fields, seed, source image and mask. */
  async fill(task, body) {
    this.task = task;
    for (const id of TASK_FIELDS) {
      $(id).value = body[id] ?? (id === "negative_prompt" ? "" : $(id).value);
    }
    $("scheduler").value = body.scheduler || "";
    $("random-seed").checked = false;
    $("seed").value = body.seed;
    this._seedMode();
    for (const row of $("loras").querySelectorAll(".lora")) {
      const used = (body.loras || []).find((lora) => lora.name === row.dataset.name);
      row.querySelector("input[type=checkbox]").checked = Boolean(used);
      if (used) row.querySelector("input[type=number]").value = used.weight;
    }
    if (body.image) {
      this.sourceLoaded(await this.editor.load(body.image));
      if (body.mask) await this.editor.restore(body.mask);
      $("strength").value = body.strength;
      this._strengthLabel();
    }
    this.setSize(body);
  }

  reuseSeed(seed) {
    $("random-seed").checked = false;
    $("seed").value = seed;
    this._seedMode();
  }

  /** Show a refusal (an ApiError or {field, message}) next to the field it names, else above the button. */
  showError(error) {
    const name = error.field || "";
    const field =
      this.form.querySelector(`.field[data-field="${CSS.escape(name)}"]`) ||
      this.form.querySelector(`.field[data-field="${CSS.escape(name.split(".")[0])}"]`);
    if (!field) {
      $("form-error").textContent = error.message;
      return;
    }
    this._clearField(field);
    const note = document.createElement("p");
    note.className = "field-error";
    note.setAttribute("role", "alert");
    note.textContent = error.message;
    field.append(note);
    field.classList.add("has-error");
    if (field.tagName === "DETAILS") field.open = true;
    field.scrollIntoView({ block: "nearest" });
  }

  clearErrors() {
    $("form-error").textContent = "";
    for (const field of this.form.querySelectorAll(".has-error")) this._clearField(field);
  }

  _clearField(field) {
    if (!field) return;
    field.classList.remove("has-error");
    for (const note of field.querySelectorAll(".field-error")) note.remove();
  }

  _seedMode() {
    $("seed").disabled = $("random-seed").checked;
  }

  _strengthLabel() {
    $("strength-value").textContent = Number($("strength").value).toFixed(2);
  }

  _brush() {
    this.editor.brush = Number($("brush").value);
    $("brush-size").textContent = `${$("brush").value} px`;
  }

  _showTask(resetStrength) {
    const task = this.task;
    const source = $("source");
    source.hidden = task === "txt2img";
    source.classList.toggle("inpaint", task === "inpaint");
    if (resetStrength && this.caps && task !== "txt2img") {
      $("strength").value = this.caps.defaults.strength[task];
      this._strengthLabel();
    }
  }

  /** A source image was loaded: size the brush to it and ask for the image's own size. */
  sourceLoaded(size) {
    const side = Math.max(size.width, size.height);
    Object.assign($("brush"), { max: Math.max(2, Math.round(side / 2)), value: Math.max(1, Math.round(side / 8)) });
    this._brush();
    this.fitSize(size);
    $("canvas-wrap").hidden = false;
  }

  _loras(loras) {
    $("lora-count").textContent = `(${loras.length})`;
    if (!loras.length) {
      const note = document.createElement("p");
      note.className = "muted";
      note.textContent = "none: start the worker with --lora-dir to use LoRAs";
      $("loras").replaceChildren(note);
      return;
    }
    $("loras").replaceChildren(
      ...loras.map((lora) => {
        const row = document.createElement("div");
        row.className = "lora row";
        row.dataset.name = lora.name;
        const check = Object.assign(document.createElement("input"), { type: "checkbox", disabled: !lora.compatible });
        const label = document.createElement("label");
        label.className = "check";
        label.title = lora.compatible ? "" : `made for ${lora.target_family}; does not fit this model`;
        label.append(check, ` ${lora.name}`);
        const weight = Object.assign(document.createElement("input"), {
          type: "number", min: -4, max: 4, step: 0.05, value: 1, title: `weight of ${lora.name}`,
        });
        weight.style.width = "6rem";
        row.append(label, weight);
        return row;
      }),
    );
  }
}
