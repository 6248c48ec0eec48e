"""Building blocks of ``train_demo_model.py``: model builders, scene batches on any device, EMA.

The builders fix the demo model's architecture (the worker loads whatever
``save_pretrained`` wrote, so changing them changes the bundled model).
:class:`SceneBatcher` draws the scenes of :mod:`demo_scenes` in batches with
torch, on the training device, pixel for pixel as ``demo_scenes.draw_scene``
does for the same placement.
"""

from __future__ import annotations

import math

import demo_scenes as ds
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

MAX_TOKENS = 16
"""Tokenizer ``model_max_length``; the longest caption needs 9 tokens."""


def build_tokenizer() -> CLIPTokenizer:
    """Build a CLIP BPE tokenizer in which every word of ``ds.SCENE_WORDS`` is one token.

    The vocabulary holds the two CLIP special tokens and the single letters
    (so any lowercase word still tokenizes); merges are added until each
    scene word comes out whole.
    """
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab: dict[str, int] = {}
    for token in ["<|startoftext|>", "<|endoftext|>", *letters, *(c + "</w>" for c in letters)]:
        vocab.setdefault(token, len(vocab))
    merges: list[tuple[str, str]] = []

    def make() -> CLIPTokenizer:
        return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=MAX_TOKENS)

    for _ in range(100):
        tokenizer = make()
        changed = False
        for word in ds.SCENE_WORDS:
            pieces = tokenizer.tokenize(word)
            if len(pieces) > 1:
                merges.append((pieces[0], pieces[1]))
                vocab.setdefault(pieces[0] + pieces[1], len(vocab))
                changed = True
        if not changed:
            return tokenizer
    raise RuntimeError("could not make every scene word a single token")


def build_text_encoder(tokenizer: CLIPTokenizer, hidden: int) -> CLIPTextModel:
    """A small ``CLIPTextModel`` over the tokenizer's vocabulary."""
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 4,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=MAX_TOKENS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        projection_dim=hidden,
    )
    return CLIPTextModel(config)


def build_vae() -> AutoencoderKL:
    """64x64x3 <-> 16x16x4 ``AutoencoderKL`` (three blocks, channels 32/64/64)."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=ds.IMAGE_SIZE,
    )


def build_unet(cross_attention_dim: int) -> UNet2DConditionModel:
    """16x16 latent UNet: channels 32/64/128, cross-attention at 16x16, 8x8 and the 4x4 mid block."""
    return UNet2DConditionModel(
        sample_size=ds.IMAGE_SIZE // 4,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64, 128),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        mid_block_type="UNetMidBlock2DCrossAttn",
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=4,
        norm_num_groups=32,
    )


def n_params(module: torch.nn.Module) -> int:
    """Number of parameters of ``module``."""
    return sum(p.numel() for p in module.parameters())


def cosine_lr(progress: float, peak: float, warmup: float, floor: float = 0.05) -> float:
    """Learning rate at ``progress`` in [0, 1]: linear warm-up over ``warmup``, then cosine to ``floor * peak``."""
    if progress < warmup:
        return peak * max(progress / warmup, 0.01)
    rest = min(1.0, (progress - warmup) / max(1e-9, 1.0 - warmup))
    return peak * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * rest)))


class SceneBatcher:
    """Random training scenes as ``[-1, 1]`` NCHW tensors, drawn on ``device``.

    Placement is drawn as ``demo_scenes.draw_scene`` draws it (offset of
    +-3 px, scale 0.9-1.1) and the geometry is evaluated in float64, so
    :meth:`draw` matches ``draw_scene`` pixel for pixel.
    """

    def __init__(self, combos: list[tuple[str, str, str]], device: torch.device, seed: int) -> None:
        self.combos = combos
        self.device = device
        self.generator = torch.Generator(device=device).manual_seed(seed)
        names = list(ds.PALETTE)
        self.palette = torch.tensor([ds.PALETTE[n] for n in names], dtype=torch.uint8, device=device)
        self.colour = torch.tensor([names.index(c) for c, _, _ in combos], device=device)
        self.shape = torch.tensor([ds.SHAPES.index(s) for _, s, _ in combos], device=device)
        self.background = torch.tensor([names.index(b) for _, _, b in combos], device=device)
        coords = torch.arange(ds.IMAGE_SIZE, dtype=torch.float64, device=device) + 0.5
        self.ys, self.xs = torch.meshgrid(coords, coords, indexing="ij")

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` random scenes as float NCHW in ``[-1, 1]`` and the index of each one's combination."""
        g = self.generator
        which = torch.randint(0, len(self.combos), (n,), generator=g, device=self.device)
        uniform = torch.rand((n, 3), generator=g, device=self.device, dtype=torch.float64)
        dx, dy = uniform[:, 0] * 6.0 - 3.0, uniform[:, 1] * 6.0 - 3.0
        scale = 0.9 + (1.1 - 0.9) * uniform[:, 2]  # numpy's uniform(0.9, 1.1)
        images = self.draw(which, dx, dy, scale)
        return images.permute(0, 3, 1, 2).float() / 127.5 - 1.0, which

    def draw(self, which: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC scenes of combinations ``which`` at offsets ``dx``, ``dy`` and ``scale`` (64x64 only)."""
        cx = (ds.IMAGE_SIZE / 2.0 + dx)[:, None, None]
        cy = (ds.IMAGE_SIZE / 2.0 + dy)[:, None, None]
        s = scale[:, None, None]
        xs, ys = self.xs[None], self.ys[None]
        radius = 19.0 * s
        circle = (xs - cx) ** 2 + (ys - cy) ** 2 <= radius**2
        half = 16.5 * s
        square = ((xs - cx).abs() <= half) & ((ys - cy).abs() <= half)
        top = cy - 22.0 * s
        bottom = cy + 16.0 * s
        frac = (ys - top) / (bottom - top)
        triangle = (frac >= 0.0) & (frac <= 1.0) & ((xs - cx).abs() <= frac * (24.0 * s))
        shape = self.shape[which][:, None, None]
        mask = torch.where(shape == 0, circle, torch.where(shape == 1, square, triangle))
        fg = self.palette[self.colour[which]][:, None, None, :]
        bg = self.palette[self.background[which]][:, None, None, :]
        return torch.where(mask[..., None], fg, bg)


class EMA:
    """Exponential moving average of a module's floating-point parameters and buffers."""

    def __init__(self, module: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in module.state_dict().items()}
        self._float_keys = [k for k, v in self.shadow.items() if v.dtype.is_floating_point]

    @torch.no_grad()
    def update(self, module: torch.nn.Module, step: int) -> None:
        """Blend ``module`` in, with the usual warm-up ``min(decay, (1+step)/(10+step))``."""
        d = min(self.decay, (1 + step) / (10 + step))
        state = module.state_dict()
        torch._foreach_lerp_([self.shadow[k] for k in self._float_keys], [state[k] for k in self._float_keys], 1 - d)

    def copy_to(self, module: torch.nn.Module) -> None:
        """Load the averaged weights into ``module``."""
        module.load_state_dict(self.shadow)

    def cpu_copy(self) -> dict[str, torch.Tensor]:
        """A CPU snapshot of the averaged weights."""
        return {k: v.detach().to("cpu", copy=True) for k, v in self.shadow.items()}
