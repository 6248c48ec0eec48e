"""Evaluate the tiny ``demo`` model saved at ``worker/models/demo``.

Loads the folder with plain diffusers (its own scheduler), generates the 20
``demo_scenes.EVAL_PROMPTS`` at 64x64, 20 steps, guidance 4.0, one fixed
seed per image, and checks that the mean colour of the central 16x16 patch
is nearest (in the palette) to the requested shape colour and that of the
outer 5 px ring to the requested background colour (colour accuracy), that
the shape's fill of its bounding box names the requested shape (shape
accuracy) and how many pixels are neither colour (``demo_scenes.stray_pixels``:
a blot). Prints the accuracy for seen and held-out combinations and the
per-image latency, then checks that img2img
(``AutoPipelineForImage2Image.from_pipe``, strength 0.5) keeps the background
colour. Exits 1 below ``--min-accuracy`` (colour) or ``--min-shape-accuracy``.
Example::

    python scripts/eval_demo_model.py --model worker/models/demo --seed 1234 --save-grid /tmp/demo_grid.png
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import demo_scenes as ds

SEED = 1234
STEPS = 20
GUIDANCE = 4.0
BLOT_PIXELS = 3
"""An image with more stray pixels (``demo_scenes.stray_pixels``) than this counts as blotted."""


def evaluate(
    pipe: Any,
    seed: int = SEED,
    steps: int = STEPS,
    guidance: float = GUIDANCE,
    keep_images: bool = False,
) -> list[dict[str, Any]]:
    """Generate every ``EVAL_PROMPTS`` entry with ``pipe`` and check its colours.

    Each result has ``prompt``, ``held_out``, ``want``/``got`` (shape, background)
    colour pairs, ``ok`` and ``seconds`` (wall time of the pipeline call), and
    ``image`` when ``keep_images`` is set.
    """
    results: list[dict[str, Any]] = []
    for prompt, colour, background, held_out in ds.EVAL_PROMPTS:
        generator = torch.Generator().manual_seed(seed)
        t0 = time.perf_counter()
        image = pipe(
            prompt,
            height=ds.IMAGE_SIZE,
            width=ds.IMAGE_SIZE,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=generator,
        ).images[0]
        seconds = time.perf_counter() - t0
        result = check(image, prompt, colour, background, held_out)
        result["seconds"] = seconds
        if keep_images:
            result["image"] = image
        results.append(result)
    return results


def evaluate_batched(pipe: Any, seeds: list[int], batch: int = 200) -> list[list[dict[str, Any]]]:
    """:func:`evaluate` (without timings) for each of ``seeds``, ``batch`` images per pipeline call.

    Each image has its own CPU generator seeded as in :func:`evaluate`, so the
    starting noise is the same; this is the fast path for a GPU.
    """
    jobs = [(seed, entry) for seed in seeds for entry in ds.EVAL_PROMPTS]
    images: list[Any] = []
    for i in range(0, len(jobs), batch):
        chunk = jobs[i : i + batch]
        images += pipe(
            [entry[0] for _, entry in chunk],
            height=ds.IMAGE_SIZE,
            width=ds.IMAGE_SIZE,
            num_inference_steps=STEPS,
            guidance_scale=GUIDANCE,
            generator=[torch.Generator().manual_seed(seed) for seed, _ in chunk],
        ).images
    per_seed: list[list[dict[str, Any]]] = [[] for _ in seeds]
    for (seed, entry), image in zip(jobs, images, strict=True):
        result = check(image, *entry)
        result["seconds"] = 0.0
        per_seed[seeds.index(seed)].append(result)
    return per_seed


def check(image: Any, prompt: str, colour: str, background: str, held_out: bool) -> dict[str, Any]:
    """Score one generated image: colours (centre, border), shape and stray pixels."""
    arr = np.asarray(image)
    got = ds.centre_and_border_colours(arr)
    shape = next(word for word in prompt.split() if word in ds.SHAPES)
    got_shape = ds.classify_shape(arr, colour, background)
    return {
        "prompt": prompt,
        "held_out": held_out,
        "want": (colour, background),
        "got": got,
        "ok": got == (colour, background),
        "shape": shape,
        "got_shape": got_shape,
        "shape_ok": got_shape == shape,
        "stray": ds.stray_pixels(arr, colour, background),
    }


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy overall / seen / held-out and the median latency, plus a one-line summary."""

    def acc(rows: list[dict[str, Any]]) -> float:
        return sum(r["ok"] for r in rows) / len(rows) if rows else float("nan")

    seen = [r for r in results if not r["held_out"]]
    held = [r for r in results if r["held_out"]]
    latency = statistics.median(r["seconds"] for r in results)
    summary: dict[str, Any] = {
        "overall": acc(results),
        "seen": acc(seen),
        "held_out": acc(held),
        "n_seen": len(seen),
        "n_held_out": len(held),
        "shape_accuracy": sum(r["shape_ok"] for r in results) / len(results),
        "held_out_shape_accuracy": sum(r["shape_ok"] for r in held) / len(held) if held else float("nan"),
        "max_stray": max(r["stray"] for r in results),
        "blotted": sum(r["stray"] > BLOT_PIXELS for r in results),
        "median_seconds": latency,
    }
    summary["line"] = (
        f"overall {summary['overall']:.0%} ({sum(r['ok'] for r in results)}/{len(results)}), "
        f"seen {summary['seen']:.0%} ({sum(r['ok'] for r in seen)}/{len(seen)}), "
        f"held-out {summary['held_out']:.0%} ({sum(r['ok'] for r in held)}/{len(held)}), "
        f"shapes {summary['shape_accuracy']:.0%} (held-out {summary['held_out_shape_accuracy']:.0%}), "
        f"stray px max {summary['max_stray']} ({summary['blotted']} images > {BLOT_PIXELS}), "
        f"median {latency * 1000:.0f} ms/image"
    )
    return summary


def check_img2img(pipe: Any, seed: int = SEED, strength: float = 0.5) -> list[dict[str, Any]]:
    """Run img2img at ``strength`` on drawn scenes and check the background colour is kept.

    For each eval prompt the input is a drawn scene with the prompt's
    background but a different shape colour and shape, so the check also
    reports whether the prompt's shape colour came through (``centre_ok``).
    """
    from diffusers import AutoPipelineForImage2Image

    img2img = AutoPipelineForImage2Image.from_pipe(pipe)
    img2img.set_progress_bar_config(disable=True)
    results: list[dict[str, Any]] = []
    for i, (prompt, colour, background, _held_out) in enumerate(ds.EVAL_PROMPTS):
        other = [c for c in ds.COLOURS if c not in (colour, background)][i % 6]
        shape = ds.SHAPES[i % len(ds.SHAPES)]
        init = ds.scene_image(other, shape, background, seed=i)
        generator = torch.Generator().manual_seed(seed)
        image = img2img(
            prompt,
            image=init,
            strength=strength,
            num_inference_steps=STEPS,
            guidance_scale=GUIDANCE,
            generator=generator,
        ).images[0]
        centre, border = ds.centre_and_border_colours(np.asarray(image))
        results.append(
            {
                "prompt": prompt,
                "init": ds.caption(other, shape, background),
                "background_ok": border == background,
                "centre_ok": centre == colour,
                "got": (centre, border),
            }
        )
    return results


def save_grid(results: list[dict[str, Any]], path: Path) -> None:
    """Save the generated images side by side (5 per row)."""
    from PIL import Image

    images = [r["image"] for r in results]
    cols = 5
    rows = (len(images) + cols - 1) // cols
    size = ds.IMAGE_SIZE
    grid = Image.new("RGB", (cols * size, rows * size))
    for i, image in enumerate(images):
        grid.paste(image, ((i % cols) * size, (i // cols) * size))
    grid.save(path)


def main() -> int:
    """Evaluate the saved model; exit status 1 when colour or shape accuracy is below its minimum."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("worker/models/demo"))
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-accuracy", type=float, default=0.95, help="minimum colour accuracy")
    parser.add_argument("--min-shape-accuracy", type=float, default=0.9)
    parser.add_argument("--save-grid", type=Path, default=None, help="write the 20 images to this PNG")
    parser.add_argument("--no-img2img", action="store_true")
    args = parser.parse_args()

    from diffusers import StableDiffusionPipeline

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    pipe = StableDiffusionPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    print(f"loaded {args.model} in {time.perf_counter() - t0:.2f}s; scheduler {type(pipe.scheduler).__name__}")

    results = evaluate(pipe, seed=args.seed, keep_images=args.save_grid is not None)
    for r in results:
        mark = "ok  " if r["ok"] and r["shape_ok"] else "FAIL"
        tag = "held-out" if r["held_out"] else "seen"
        print(
            f"{mark} [{tag:8}] {r['prompt']:<45} got shape={r['got'][0]:<6} "
            f"background={r['got'][1]:<6} ({r['got_shape']}, {r['stray']} stray px) {r['seconds'] * 1000:5.0f} ms"
        )
    summary = summarise(results)
    print(summary["line"])
    if args.save_grid is not None:
        save_grid(results, args.save_grid)
        print(f"wrote {args.save_grid}")

    if not args.no_img2img:
        i2i = check_img2img(pipe, seed=args.seed)
        kept = sum(r["background_ok"] for r in i2i)
        recoloured = sum(r["centre_ok"] for r in i2i)
        for r in i2i:
            if not r["background_ok"]:
                print(f"img2img background changed: {r['init']!r} + {r['prompt']!r} -> {r['got']}")
        print(
            f"img2img strength 0.5: background kept {kept}/{len(i2i)}, "
            f"shape colour follows prompt {recoloured}/{len(i2i)}"
        )
    passed = summary["overall"] >= args.min_accuracy and summary["shape_accuracy"] >= args.min_shape_accuracy
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
