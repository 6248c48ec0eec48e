"""The demo model's training draws the scenes the evaluation checks, and the blot check sees blots."""

from __future__ import annotations

import demo_scenes as ds
import demo_training as dt
import numpy as np
import torch


def test_batched_scenes_match_draw_scene_pixel_for_pixel() -> None:
    combos = ds.training_combinations()
    batcher = dt.SceneBatcher(combos, torch.device("cpu"), seed=0)
    which, offsets, expected = [], [], []
    for i in range(0, len(combos), 7):
        rng = np.random.default_rng(i)
        dx, dy = rng.uniform(-3.0, 3.0, size=2)
        offsets.append((dx, dy, rng.uniform(0.9, 1.1)))
        expected.append(ds.draw_scene(*combos[i], np.random.default_rng(i)))  # the same draws
        which.append(i)
    dx, dy, scale = torch.tensor(offsets, dtype=torch.float64).T
    drawn = batcher.draw(torch.tensor(which), dx, dy, scale).numpy()
    assert np.array_equal(drawn, np.stack(expected))
    images, index = batcher.sample(8)
    assert images.shape == (8, 3, 64, 64) and images.min() >= -1.0 and images.max() <= 1.0
    assert all(combos[i] not in ds.HELD_OUT for i in index.tolist())


def test_every_scene_word_is_one_token() -> None:
    tokenizer = dt.build_tokenizer()
    assert all(len(tokenizer.tokenize(word)) == 1 for word in ds.SCENE_WORDS)


def test_stray_pixels_count_a_blot_but_not_a_clean_outline() -> None:
    scene = ds.draw_scene("green", "square", "purple", np.random.default_rng(3))
    assert ds.stray_pixels(scene, "green", "purple") == 0
    blotted = scene.copy()
    blotted[40:43, 20:23] = ds.PALETTE["yellow"]  # inside the square, away from its outline
    assert ds.stray_pixels(blotted, "green", "purple") == 9
