// The source image of img2img/inpaint and the mask painted over it with a brush.
// The mask lives in an off-screen canvas at the image's own size: white = repaint, black = keep (the native
// API's convention). The visible overlay shows the same strokes in translucent red.

export class MaskEditor {
  constructor(image, overlay) {
    this.image = image;
    this.overlay = overlay;
    this.mask = document.createElement("canvas");
    this.brush = 8;
    this.erasing = false;
    this.painted = false;
    this.source = null; // data URL of the loaded image, as sent to the worker
    this._last = null;
    overlay.addEventListener("pointerdown", (event) => this._down(event));
    overlay.addEventListener("pointermove", (event) => this._move(event));
    for (const name of ["pointerup", "pointercancel", "pointerleave"]) {
      overlay.addEventListener(name, () => (this._last = null));
    }
  }

  /** Show `dataUrl` and start an empty mask of its size; resolves with {width, height}. */
  async load(dataUrl) {
    this.image.src = dataUrl;
    await this.image.decode();
    const width = this.image.naturalWidth;
    const height = this.image.naturalHeight;
    for (const canvas of [this.mask, this.overlay]) {
      canvas.width = width;
      canvas.height = height;
    }
    this.source = dataUrl;
    this.clear();
    return { width, height };
  }

  clear() {
    const mask = this.mask.getContext("2d");
    mask.fillStyle = "#000";
    mask.fillRect(0, 0, this.mask.width, this.mask.height);
    this.overlay.getContext("2d").clearRect(0, 0, this.overlay.width, this.overlay.height);
    this.painted = false;
  }

  /** The mask as a PNG data URL (black and white, the image's size). */
  maskDataUrl() {
    return this.mask.toDataURL("image/png");
  }

  /** Replace the mask with a saved one (a "reproduce" of an inpaint job). */
  async restore(maskUrl) {
    const picture = new Image();
    picture.src = maskUrl;
    await picture.decode();
    this.clear();
    this.mask.getContext("2d").drawImage(picture, 0, 0, this.mask.width, this.mask.height);
    // redraw the overlay from the mask: red where white
    const pixels = this.mask.getContext("2d").getImageData(0, 0, this.mask.width, this.mask.height);
    const shown = new ImageData(pixels.width, pixels.height);
    for (let i = 0; i < pixels.data.length; i += 4) {
      shown.data[i] = 255;
      shown.data[i + 3] = pixels.data[i];
    }
    this.overlay.getContext("2d").putImageData(shown, 0, 0);
    this.painted = true;
  }

  _point(event) {
    const box = this.overlay.getBoundingClientRect();
    return {
      x: ((event.clientX - box.left) * this.overlay.width) / box.width,
      y: ((event.clientY - box.top) * this.overlay.height) / box.height,
    };
  }

  _down(event) {
    if (!this.source) return;
    event.preventDefault();
    this.overlay.setPointerCapture?.(event.pointerId);
    this._last = this._point(event);
    this._stroke(this._last, this._last);
  }

  _move(event) {
    if (!this._last) return;
    const point = this._point(event);
    this._stroke(this._last, point);
    this._last = point;
  }

  _stroke(from, to) {
    const mask = this.mask.getContext("2d");
    const shown = this.overlay.getContext("2d");
    mask.globalCompositeOperation = "source-over";
    mask.strokeStyle = this.erasing ? "#000" : "#fff";
    shown.globalCompositeOperation = this.erasing ? "destination-out" : "source-over";
    shown.strokeStyle = "#f00";
    for (const context of [mask, shown]) {
      context.fillStyle = context.strokeStyle;
      context.lineWidth = this.brush;
      context.lineCap = "round";
      context.lineJoin = "round";
      context.beginPath();
      if (from.x === to.x && from.y === to.y) {
        // a click: a zero-length line may draw nothing, so a dot
        context.arc(from.x, from.y, this.brush / 2, 0, 2 * Math.PI);
        context.fill();
      } else {
        context.moveTo(from.x, from.y);
        context.lineTo(to.x, to.y);
        context.stroke();
      }
    }
    if (!this.erasing) this.painted = true;
  }
}
