"""Procedural scenes for the tiny ``demo`` text-to-image model.

A scene is one coloured shape (circle, square or triangle) on a flat
coloured background, drawn at 64x64 and captioned like
``"a red circle on a blue background"``.

This module only needs numpy (and Pillow for :func:`scene_image`); it has no
side effects at import, so tests can import the palette, the captions and the
evaluation prompts without torch.
"""

from __future__ import annotations

import itertools

import numpy as np

IMAGE_SIZE = 64
"""Side of the square scene images, in pixels."""

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 220),
    "yellow": (245, 225, 30),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
    "orange": (245, 130, 20),
    "purple": (140, 40, 180),
}
"""Colour name -> RGB. Well separated, so a mean colour maps back unambiguously."""

COLOURS: tuple[str, ...] = tuple(PALETTE)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")

HELD_OUT: tuple[tuple[str, str, str], ...] = (
    ("red", "circle", "blue"),
    ("green", "square", "yellow"),
    ("blue", "triangle", "white"),
    ("yellow", "circle", "black"),
    ("purple", "square", "orange"),
    ("white", "triangle", "green"),
)
"""(shape colour, shape, background colour) combinations never shown in training."""

SCENE_WORDS: tuple[str, ...] = ("a", "on", "background", *COLOURS, *SHAPES)
"""Every word a caption can contain; each becomes a single tokenizer token."""


def caption(colour: str, shape: str, background: str) -> str:
    """Return the caption of a scene, e.g. ``"a red circle on a blue background"``."""
    return f"a {colour} {shape} on a {background} background"


def all_combinations() -> list[tuple[str, str, str]]:
    """Every valid (colour, shape, background) triple; the background never equals the colour."""
    return [(c, s, b) for c, s, b in itertools.product(COLOURS, SHAPES, COLOURS) if c != b]


def training_combinations() -> list[tuple[str, str, str]]:
    """All valid combinations except :data:`HELD_OUT`."""
    held = set(HELD_OUT)
    return [combo for combo in all_combinations() if combo not in held]


def _seen_eval_combinations() -> list[tuple[str, str, str]]:
    """Fourteen fixed seen combinations covering every colour (shape and background) and shape."""
    return [
        ("red", "square", "green"),
        ("green", "circle", "purple"),
        ("blue", "circle", "yellow"),
        ("yellow", "triangle", "blue"),
        ("white", "square", "black"),
        ("black", "circle", "white"),
        ("orange", "triangle", "purple"),
        ("purple", "circle", "white"),
        ("red", "triangle", "yellow"),
        ("green", "triangle", "black"),
        ("blue", "square", "orange"),
        ("orange", "circle", "blue"),
        ("black", "square", "red"),
        ("white", "circle", "red"),
    ]


EVAL_PROMPTS: list[tuple[str, str, str, bool]] = [
    (caption(c, s, b), c, b, (c, s, b) in HELD_OUT) for c, s, b in (*_seen_eval_combinations(), *HELD_OUT)
]
"""20 (prompt, shape colour, background colour, held_out) entries for evaluation."""


def draw_scene(
    colour: str,
    shape: str,
    background: str,
    rng: np.random.Generator | None = None,
    size: int = IMAGE_SIZE,
) -> np.ndarray:
    """Draw one scene as a ``(size, size, 3)`` uint8 RGB array.

    The shape is centred with a small random offset and scale (from ``rng``;
    none without it), always covers the central quarter of the image and
    never touches the outer 6 px ring, so the centre shows the shape colour
    and the border the background colour.
    """
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    if colour == background:
        raise ValueError("the shape colour must differ from the background colour")
    unit = size / 64.0
    if rng is None:
        dx = dy = 0.0
        scale = 1.0
    else:
        dx, dy = rng.uniform(-3.0, 3.0, size=2) * unit
        scale = float(rng.uniform(0.9, 1.1))
    cx = size / 2.0 + dx
    cy = size / 2.0 + dy
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    if shape == "circle":
        radius = 19.0 * unit * scale
        mask = (xs - cx) ** 2 + (ys - cy) ** 2 <= radius**2
    elif shape == "square":
        half = 16.5 * unit * scale
        mask = (np.abs(xs - cx) <= half) & (np.abs(ys - cy) <= half)
    else:  # triangle pointing up, centroid near the image centre
        top = cy - 22.0 * unit * scale
        bottom = cy + 16.0 * unit * scale
        half_base = 24.0 * unit * scale
        frac = (ys - top) / (bottom - top)
        mask = (frac >= 0.0) & (frac <= 1.0) & (np.abs(xs - cx) <= frac * half_base)
    image = np.empty((size, size, 3), dtype=np.uint8)
    image[...] = PALETTE[background]
    image[mask] = PALETTE[colour]
    return image


def scene_image(colour: str, shape: str, background: str, seed: int | None = None):
    """Draw a scene as a ``PIL.Image`` (random placement when ``seed`` is given)."""
    from PIL import Image

    rng = None if seed is None else np.random.default_rng(seed)
    return Image.fromarray(draw_scene(colour, shape, background, rng))


def nearest_colour(rgb: np.ndarray | tuple[float, float, float]) -> str:
    """Return the palette name nearest (Euclidean RGB) to ``rgb``."""
    target = np.asarray(rgb, dtype=np.float64)
    return min(PALETTE, key=lambda name: float(np.sum((np.asarray(PALETTE[name]) - target) ** 2)))


def centre_and_border_colours(image: np.ndarray, centre: int = 16, border: int = 5) -> tuple[str, str]:
    """Nearest palette colours of the central ``centre``x``centre`` patch and of the outer ring."""
    arr = np.asarray(image, dtype=np.float64)[..., :3]
    h, w = arr.shape[:2]
    top, left = (h - centre) // 2, (w - centre) // 2
    centre_mean = arr[top : top + centre, left : left + centre].reshape(-1, 3).mean(axis=0)
    ring = np.ones((h, w), dtype=bool)
    ring[border : h - border, border : w - border] = False
    border_mean = arr[ring].mean(axis=0)
    return nearest_colour(centre_mean), nearest_colour(border_mean)


def classify_shape(image: np.ndarray, colour: str, background: str) -> str:
    """Guess which shape of :data:`SHAPES` an image shows, from how it fills its bounding box.

    Pixels nearer to ``colour`` than to ``background`` form the shape; its
    area over its bounding box is about 1.0 for a square, 0.79 for a circle
    and 0.5 for a triangle. Returns ``"none"`` when almost no pixel matches.
    """
    arr = np.asarray(image, dtype=np.float64)[..., :3]
    near_shape = np.sum((arr - np.asarray(PALETTE[colour])) ** 2, axis=-1)
    near_background = np.sum((arr - np.asarray(PALETTE[background])) ** 2, axis=-1)
    mask = near_shape < near_background
    if mask.sum() < 0.02 * mask.size:
        return "none"
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    box = (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)
    fill = mask.sum() / box
    if fill > 0.89:
        return "square"
    if fill > 0.64:
        return "circle"
    return "triangle"


def stray_pixels(image: np.ndarray, colour: str, background: str, tolerance: float = 80.0, band: int = 2) -> int:
    """Count pixels that are neither the shape colour nor the background colour (blots, smears).

    A pixel is stray when its RGB distance to both palette colours exceeds
    ``tolerance``; pixels within ``band`` px of the shape's outline are not
    counted, since a decoder blends colours there.
    """
    arr = np.asarray(image, dtype=np.float64)[..., :3]
    d_shape = np.sqrt(np.sum((arr - np.asarray(PALETTE[colour])) ** 2, axis=-1))
    d_background = np.sqrt(np.sum((arr - np.asarray(PALETTE[background])) ** 2, axis=-1))
    mask = d_shape < d_background
    h, w = mask.shape
    padded = np.pad(mask, band, mode="edge")
    outline = np.zeros_like(mask)
    for dy in range(-band, band + 1):
        for dx in range(-band, band + 1):
            outline |= padded[band + dy : band + dy + h, band + dx : band + dx + w] != mask
    return int(np.sum((np.minimum(d_shape, d_background) > tolerance) & ~outline))
