"""Live previews of intermediate latents: a linear latent→RGB projection (cheap) or a full VAE decode.

The projection is fitted when the model loads, by least squares between the VAE's own encodings of a few
synthetic pictures and those pictures shrunk to latent size. That works for every family (tiny and bundled
models included) without hand-copied factors, and costs a handful of VAE encodes once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

FIT_IMAGES = 12
FIT_SIZE = 128


@dataclass(frozen=True)
class LatentProjection:
    """rgb = latent · weight + bias, per latent pixel (pipeline latent space, RGB in [-1, 1])."""

    weight: torch.Tensor  # (channels, 3)
    bias: torch.Tensor  # (3,)
    scale: int  # pixels per latent pixel

    def render(self, latents: torch.Tensor) -> list[Image.Image]:
        """Every image of a batch of latents, at output size."""
        rgb = torch.einsum("bchw,cr->bhwr", latents.detach().float().cpu(), self.weight) + self.bias
        pixels = ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
        images = [Image.fromarray(np.ascontiguousarray(one), "RGB") for one in pixels]
        size = (pixels.shape[2] * self.scale, pixels.shape[1] * self.scale)
        return [image.resize(size, Image.Resampling.BILINEAR) for image in images]


def fit_projection(pipe: Any) -> LatentProjection:
    """Fit the projection for this pipeline's VAE (deterministic: fixed synthetic pictures)."""
    vae = pipe.vae
    scale = int(getattr(pipe, "vae_scale_factor", 8))
    pictures = _synthetic_pictures(FIT_IMAGES, FIT_SIZE).to(device=vae.device, dtype=vae.dtype)
    with torch.inference_mode():
        latents = vae.encode(pictures).latent_dist.mean
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    latents = ((latents - shift) * vae.config.scaling_factor).float().cpu()  # the space pipelines denoise in
    targets = F.avg_pool2d(pictures.float().cpu(), scale)
    x = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
    x = torch.cat([x, torch.ones(x.shape[0], 1)], dim=1)
    y = targets.permute(0, 2, 3, 1).reshape(-1, 3)
    solution = torch.linalg.lstsq(x, y).solution
    return LatentProjection(solution[:-1].contiguous(), solution[-1].contiguous(), scale)


def _synthetic_pictures(count: int, size: int) -> torch.Tensor:
    """Flat colours, rectangles and gradients in [-1, 1]: enough colour variety to pin down 3 × C numbers."""
    generator = torch.Generator().manual_seed(0)
    pictures = torch.empty(count, 3, size, size)
    ramp = torch.linspace(-1, 1, size)
    for i in range(count):
        background = torch.rand(3, 1, 1, generator=generator) * 2 - 1
        picture = background.expand(3, size, size).clone()
        if i % 3 == 1:
            picture = picture * ramp.view(1, 1, size)
        x0, y0 = (torch.randint(0, size // 2, (2,), generator=generator)).tolist()
        w, h = (torch.randint(size // 4, size // 2, (2,), generator=generator)).tolist()
        picture[:, y0 : y0 + h, x0 : x0 + w] = torch.rand(3, 1, 1, generator=generator) * 2 - 1
        pictures[i] = picture
    return pictures
