"""Train the tiny ``demo`` text-to-image model on CPU.

The model has the Stable Diffusion 1.5 architecture, only very small:
``AutoencoderKL`` (64x64 RGB <-> 4x16x16 latents), ``CLIPTextModel`` with a
CLIP BPE tokenizer whose scene words are single tokens,
``UNet2DConditionModel`` (v-prediction) and a ``DDIMScheduler`` with
"trailing" timestep spacing for 20-step sampling. It learns procedurally
drawn scenes from :mod:`demo_scenes` ("a red circle on a blue background");
the combinations in ``demo_scenes.HELD_OUT`` are never shown in training.

Phases: (1) train the VAE, (2) encode a fixed data set to latents and set the
VAE ``scaling_factor`` from their standard deviation, (3) train the UNet and
the text encoder together (10 % empty captions for classifier-free guidance,
min-SNR loss weighting, EMA of the weights), evaluating the EMA weights with
the colour check of ``eval_demo_model.py`` every ``--eval-every`` steps. The
best-scoring EMA pipeline is saved with ``StableDiffusionPipeline.save_pretrained``.

Everything is seeded, offline and CPU-only. Example::

    python scripts/train_demo_model.py --out worker/models/demo --ckpt-dir /tmp/demo_ckpt
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))

import demo_scenes as ds
from eval_demo_model import evaluate, summarise

MAX_TOKENS = 16
"""Tokenizer ``model_max_length``; the longest caption needs 9 tokens."""

SCHEDULER_CONFIG: dict[str, object] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "prediction_type": "v_prediction",
    "clip_sample": False,
}
"""Noise schedule shared by training (DDPM) and sampling (DDIM).

The linear schedule ends at ``alpha_bar ~ 4e-5``, so pure noise at sampling
time matches training: with SD's ``scaled_linear`` schedule the image mean
leaks through the last timestep, and a tiny model then takes its colours from
the noise instead of the prompt.
"""


def log(msg: str) -> None:
    """Print a time-stamped line and flush (the script is run under nohup)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


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


def make_dataset(n: int, rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[str, str, str]]]:
    """Draw ``n`` training scenes (uint8 NHWC) cycling through the training combinations."""
    combos = ds.training_combinations()
    order = np.concatenate([rng.permutation(len(combos)) for _ in range(n // len(combos) + 1)])[:n]
    chosen = [combos[i] for i in order]
    images = np.stack([ds.draw_scene(c, s, b, rng) for c, s, b in chosen])
    return images, chosen


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def cosine_lr(step: int, total: int, peak: float, warmup: int, floor: float = 0.05) -> float:
    """Linear warm-up then cosine decay to ``floor * peak``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def train_vae(vae: AutoencoderKL, images: np.ndarray, steps: int, batch: int, lr: float, seed: int) -> float:
    """Train the VAE (MSE + 1e-6 KL) on random batches of ``images``; return the final MSE."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    vae.train()
    t0 = time.time()
    recent: list[float] = []
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, steps, lr, warmup=50, floor=0.1)
        idx = torch.randint(0, len(images), (batch,), generator=gen)
        x = to_tensor(images[idx.numpy()])
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=gen)
        recon = vae.decode(z).sample
        mse = F.mse_loss(recon, x)
        loss = mse + 1e-6 * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        recent = [*recent, mse.item()][-50:]
        if step % 100 == 0 or step == steps - 1:
            log(f"vae step {step}/{steps} mse {np.mean(recent):.4f} ({time.time() - t0:.0f}s)")
    vae.eval()
    return float(np.mean(recent))


@torch.no_grad()
def encode_latents(vae: AutoencoderKL, images: np.ndarray, chunk: int = 256) -> torch.Tensor:
    """Posterior means of ``images`` (unscaled)."""
    return torch.cat(
        [vae.encode(to_tensor(images[i : i + chunk])).latent_dist.mean for i in range(0, len(images), chunk)]
    )


class EMA:
    """Exponential moving average of a module's floating-point state."""

    def __init__(self, module: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: torch.nn.Module, step: int) -> None:
        """Blend ``module`` in, with the usual warm-up ``min(decay, (1+step)/(10+step))``."""
        d = min(self.decay, (1 + step) / (10 + step))
        for k, v in module.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(d).add_(v.detach(), alpha=1 - d)
            else:
                self.shadow[k].copy_(v)

    def copy_to(self, module: torch.nn.Module) -> None:
        """Load the averaged weights into ``module``."""
        module.load_state_dict(self.shadow)


def make_pipeline(
    vae: AutoencoderKL,
    text_encoder: CLIPTextModel,
    tokenizer: CLIPTokenizer,
    unet: UNet2DConditionModel,
) -> StableDiffusionPipeline:
    """Assemble the SD pipeline with the DDIM sampling scheduler."""
    scheduler = DDIMScheduler(
        **SCHEDULER_CONFIG,
        timestep_spacing="trailing",
        set_alpha_to_one=False,
        steps_offset=1,  # unused by "trailing" spacing; 1 avoids a diffusers warning
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_pipeline(pipe: StableDiffusionPipeline, out: Path, meta: dict[str, object]) -> None:
    """Write the pipeline (fp32 safetensors) to ``out`` atomically, plus ``training_info.json``."""
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    pipe.save_pretrained(tmp, safe_serialization=True)
    (tmp / "training_info.json").write_text(json.dumps(meta, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


def main() -> None:
    """Parse arguments and run the three training phases."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("worker/models/demo"))
    parser.add_argument("--ckpt-dir", type=Path, default=Path("/tmp/demo_ckpt"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-images", type=int, default=8192)
    parser.add_argument("--vae-steps", type=int, default=700)
    parser.add_argument("--vae-batch", type=int, default=16)
    parser.add_argument("--vae-lr", type=float, default=1e-3)
    parser.add_argument("--unet-steps", type=int, default=8000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=6e-4)
    parser.add_argument("--text-hidden", type=int, default=64)
    parser.add_argument("--ema-decay", type=float, default=0.999)
    parser.add_argument("--uncond-prob", type=float, default=0.1)
    parser.add_argument("--snr-gamma", type=float, default=5.0)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--ckpt-every", type=int, default=250)
    parser.add_argument("--max-minutes", type=float, default=60.0, help="stop UNet training past this wall time")
    parser.add_argument(
        "--unet-minutes",
        type=float,
        default=None,
        help="optional wall-time budget for the UNet phase: the LR schedule then follows "
        "max(step / unet_steps, elapsed / budget) and training stops when either runs out",
    )
    parser.add_argument("--resume", action="store_true", help="resume from --ckpt-dir/last.pt")
    args = parser.parse_args()

    t_start = time.time()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    args.ckpt_dir.mkdir(parents=True, exist_ok=True)

    tokenizer = build_tokenizer()
    images, combos = make_dataset(args.n_images, rng)
    captions = [ds.caption(*c) for c in combos]
    log(f"{len(images)} images over {len(ds.training_combinations())} combinations; vocab {len(tokenizer)}")

    # ---- phase 1: VAE -------------------------------------------------------
    vae_path = args.ckpt_dir / "vae.pt"
    vae = build_vae()
    if args.resume and vae_path.exists():
        saved = torch.load(vae_path)
        vae.load_state_dict(saved["state"])
        vae_mse = saved["mse"]
        vae.eval()
        log(f"loaded VAE from {vae_path}")
    else:
        torch.manual_seed(args.seed)
        vae_mse = train_vae(vae, images, args.vae_steps, args.vae_batch, args.vae_lr, args.seed)
        torch.save({"state": vae.state_dict(), "mse": vae_mse}, vae_path)
    t_vae = time.time() - t_start

    # ---- phase 2: latents -----------------------------------------------------
    latents = encode_latents(vae, images)
    scaling = float(1.0 / latents.std())
    vae.register_to_config(scaling_factor=scaling)
    latents = latents * scaling
    log(
        f"latents {tuple(latents.shape)} mean {latents.mean():.3f} std {latents.std():.3f}; "
        f"scaling_factor {scaling:.4f}"
    )
    ids_all = tokenizer(captions, padding="max_length", max_length=MAX_TOKENS, return_tensors="pt").input_ids
    ids_empty = tokenizer([""], padding="max_length", max_length=MAX_TOKENS, return_tensors="pt").input_ids[0]

    # ---- phase 3: UNet + text encoder ------------------------------------------
    torch.manual_seed(args.seed + 1)
    text_encoder = build_text_encoder(tokenizer, args.text_hidden)
    unet = build_unet(args.text_hidden)
    log(
        f"params: vae {n_params(vae) / 1e6:.3f}M text {n_params(text_encoder) / 1e6:.3f}M "
        f"unet {n_params(unet) / 1e6:.3f}M"
    )
    noise_scheduler = DDPMScheduler(**SCHEDULER_CONFIG)
    alphas_cumprod = noise_scheduler.alphas_cumprod
    snr_all = alphas_cumprod / (1.0 - alphas_cumprod)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    ema_unet = EMA(unet, args.ema_decay)
    ema_text = EMA(text_encoder, args.ema_decay)
    gen = torch.Generator().manual_seed(args.seed + 2)
    start_step = 0
    best: dict[str, object] = {"acc": -1.0}
    last_path = args.ckpt_dir / "last.pt"
    if args.resume and last_path.exists():
        state = torch.load(last_path)
        unet.load_state_dict(state["unet"])
        text_encoder.load_state_dict(state["text"])
        ema_unet.shadow = state["ema_unet"]
        ema_text.shadow = state["ema_text"]
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"])
        start_step = state["step"]
        best = state["best"]
        log(f"resumed at step {start_step}")

    eval_unet = copy.deepcopy(unet)
    eval_text = copy.deepcopy(text_encoder)
    eval_pipe = make_pipeline(vae, eval_text, tokenizer, eval_unet)

    def run_eval(step: int) -> float:
        ema_unet.copy_to(eval_unet)
        ema_text.copy_to(eval_text)
        results = evaluate(eval_pipe)
        summary = summarise(results)
        failed = [r["prompt"] for r in results if not r["ok"]]
        log(f"eval step {step}: {summary['line']} failed={failed}")
        acc = float(summary["overall"])
        shapes = float(summary["shape_accuracy"])
        # selection is on the colour check only (the shape check is informational);
        # ties go to the later, longer-trained weights
        if acc >= float(best["acc"]):
            best.update(acc=acc, shapes=shapes, step=step, summary=summary["line"], failed=failed)
            meta = {
                "step": step,
                "accuracy": summary,
                "failed": failed,
                "vae_mse": vae_mse,
                "scaling_factor": scaling,
                "args": {k: str(v) for k, v in vars(args).items()},
                "params": {
                    "vae": n_params(vae),
                    "text_encoder": n_params(eval_text),
                    "unet": n_params(eval_unet),
                },
                "train_seconds": round(time.time() - t_start, 1),
            }
            save_pipeline(eval_pipe, args.out, meta)
            log(f"saved best ({acc:.2f}) pipeline to {args.out}")
        return acc

    def save_checkpoint(step: int) -> None:
        torch.save(
            {
                "unet": unet.state_dict(),
                "text": text_encoder.state_dict(),
                "ema_unet": ema_unet.shadow,
                "ema_text": ema_text.shadow,
                "opt": opt.state_dict(),
                "gen": gen.get_state(),
                "step": step,
                "best": best,
            },
            last_path,
        )

    unet.train()
    text_encoder.train()
    t0 = time.time()
    recent: list[float] = []
    step = start_step
    deadline = t_start + args.max_minutes * 60
    unet_deadline = None if args.unet_minutes is None else t0 + args.unet_minutes * 60
    while step < args.unet_steps:
        progress_step = step
        if unet_deadline is not None:
            time_frac = (time.time() - t0) / (unet_deadline - t0)
            if time_frac >= 1.0:
                log(f"UNet time budget reached at step {step}")
                break
            progress_step = max(step, int(time_frac * args.unet_steps))
        lr = cosine_lr(progress_step, args.unet_steps, args.lr, warmup=200)
        for group in opt.param_groups:
            group["lr"] = lr
        idx = torch.randint(0, len(latents), (args.batch,), generator=gen)
        x0 = latents[idx]
        ids = ids_all[idx].clone()
        drop = torch.rand(args.batch, generator=gen) < args.uncond_prob
        ids[drop] = ids_empty
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (args.batch,), generator=gen)
        xt = noise_scheduler.add_noise(x0, noise, t)
        target = noise_scheduler.get_velocity(x0, noise, t)
        cond = text_encoder(ids)[0]
        pred = unet(xt, t, encoder_hidden_states=cond).sample
        snr = snr_all[t]
        weight = torch.clamp(snr, max=args.snr_gamma) / (snr + 1.0)
        per_sample = F.mse_loss(pred, target, reduction="none").mean(dim=(1, 2, 3))
        loss = (per_sample * weight).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema_unet.update(unet, step)
        ema_text.update(text_encoder, step)
        step += 1
        recent = [*recent, per_sample.mean().item()][-100:]
        if step % 100 == 0:
            rate = (time.time() - t0) / (step - start_step)
            log(f"unet step {step}/{args.unet_steps} v-mse {np.mean(recent):.4f} lr {lr:.2e} ({rate:.2f}s/step)")
        if step % args.ckpt_every == 0:
            save_checkpoint(step)
        if step % args.eval_every == 0 and step < args.unet_steps:
            run_eval(step)
            unet.train()
            text_encoder.train()
        if time.time() > deadline:
            log(f"time limit reached at step {step}")
            break
    save_checkpoint(step)
    run_eval(step)
    log(f"done in {(time.time() - t_start) / 60:.1f} min (VAE {t_vae / 60:.1f} min); final v-mse {np.mean(recent):.4f}")
    log(f"best: {best}")


if __name__ == "__main__":
    main()
