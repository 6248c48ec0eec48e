"""Train the tiny ``demo`` text-to-image model within a wall-clock budget, on a GPU or the CPU.

The model has the Stable Diffusion 1.5 architecture, only very small (see
:mod:`demo_training`): ``AutoencoderKL`` (64x64 RGB <-> 4x16x16 latents),
``CLIPTextModel`` with a CLIP BPE tokenizer whose scene words are single
tokens, ``UNet2DConditionModel`` (v-prediction) and a ``DDIMScheduler`` with
"trailing" timestep spacing for 20-step sampling. It learns procedurally
drawn scenes from :mod:`demo_scenes` ("a red circle on a blue background");
the combinations in ``demo_scenes.HELD_OUT`` are never shown in training.

Phases, all inside ``--minutes`` (the learning rates follow the elapsed share
of each phase's time, so a faster machine simply takes more steps):

1. VAE on fresh scenes every step: MSE + L1 + the mean of each image's worst
   1 % pixels (a blot is a few very wrong pixels that MSE barely sees) + a
   tiny KL term.
2. Encode a pool of scenes to latents; ``scaling_factor`` = 1 / their std.
3. UNet and text encoder together: 10 % empty captions (classifier-free
   guidance), min-SNR weighting, EMA, the text encoder at its own learning
   rate plus a token-identity loss (a linear head must read each word back
   from its hidden state, so "circle" and "square" cannot collapse into one
   conditioning). Periodically both the EMA and the raw weights run the
   evaluation of ``eval_demo_model.py`` on ``--select-seeds``; the weights
   with the best shape + colour accuracy are kept and saved.

Then the saved folder is reloaded and evaluated on ``--report-seeds``.
Examples::

    python scripts/train_demo_model.py --device cuda --minutes 4 --out /tmp/demo
    python scripts/train_demo_model.py --device cpu --minutes 60 --out worker/models/demo
"""

from __future__ import annotations

import time

STARTED = time.monotonic()
"""The ``--minutes`` budget counts from here, imports included."""

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import diffusers  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import transformers  # noqa: E402
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, StableDiffusionPipeline  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import demo_scenes as ds  # noqa: E402
import demo_training as dt  # noqa: E402
from eval_demo_model import evaluate_batched, summarise  # noqa: E402

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
    """Print a line stamped with the seconds since start, and flush (the output is tailed live)."""
    print(f"[{time.monotonic() - STARTED:6.1f}s] {msg}", flush=True)


def parse_args() -> argparse.Namespace:
    """Command-line options; sizes default by device (GPU: large batches and pool)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("worker/models/demo"))
    parser.add_argument("--device", default="auto", help="cuda, cpu or auto (cuda when available)")
    parser.add_argument("--minutes", type=float, default=60.0, help="wall-clock budget, imports to saved model")
    parser.add_argument("--final-reserve", type=float, default=None, help="seconds kept for save + final eval")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (CPU training)")
    parser.add_argument("--vae-share", type=float, default=0.22, help="share of the training time for the VAE")
    parser.add_argument("--vae-batch", type=int, default=None)
    parser.add_argument("--vae-lr", type=float, default=1e-3)
    parser.add_argument("--pool", type=int, default=None, help="scenes encoded to latents for the UNet phase")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--text-lr-mult", type=float, default=2.0)
    parser.add_argument("--token-loss", type=float, default=0.05, help="weight of the token-identity loss")
    parser.add_argument("--text-hidden", type=int, default=64)
    parser.add_argument("--ema-decay", type=float, default=None)
    parser.add_argument("--uncond-prob", type=float, default=0.1)
    parser.add_argument("--snr-gamma", type=float, default=5.0)
    parser.add_argument("--evals", type=int, default=10, help="evaluations spread over the last 60 % of the UNet phase")
    parser.add_argument("--select-seeds", type=int, nargs="+", default=[11, 12, 13, 14, 15])
    parser.add_argument("--report-seeds", type=int, nargs="*", default=[1234, 1235, 1236])
    parser.add_argument("--eval-weights", nargs="+", choices=["ema", "raw"], default=["ema", "raw"])
    parser.add_argument(
        "--init-from",
        type=Path,
        default=None,
        help="fine-tune this model folder: its VAE encoder (and so its latent space and scaling_factor) stays "
        "fixed, the decoder, text encoder and UNet continue from its weights",
    )
    parser.add_argument("--shape-focus", type=float, default=0.0, help="share of UNet batches with circles/squares")
    parser.add_argument(
        "--latent-noise",
        type=float,
        default=0.0,
        help="VAE phase: add up to this share of the latents' std as noise before decoding (the UNet's latents are "
        "never exact; a decoder that only saw the encoder's draws their small errors as blots)",
    )
    parser.add_argument(
        "--decoder-only",
        action="store_true",
        help="with --init-from: spend the whole budget on the VAE decoder (its encoder, so its latent space, stays "
        "fixed and the model's UNet stays valid); a decoder from one such run fits any UNet trained on that encoder",
    )
    args = parser.parse_args()
    gpu = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    args.device = "cuda" if gpu else "cpu"
    defaults = {
        "vae_batch": (256, 16),
        "pool": (262144, 8192),
        "batch": (1024, 16),
        "lr": (1e-3, 6e-4),
        "ema_decay": (0.999, 0.999),
    }
    for name, (on_gpu, on_cpu) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, on_gpu if gpu else on_cpu)
    if args.final_reserve is None:
        args.final_reserve = 20.0 if gpu else 60.0
    if args.decoder_only and args.init_from is None:
        parser.error("--decoder-only needs --init-from (the model whose decoder it trains)")
    if args.decoder_only:
        args.vae_share = 1.0
    return args


class Clock:
    """Deadlines inside the ``--minutes`` budget."""

    def __init__(self, minutes: float, reserve: float) -> None:
        self.end = STARTED + minutes * 60.0 - reserve

    def left(self) -> float:
        """Seconds left before the final save and evaluation."""
        return self.end - time.monotonic()


def settle(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock checks mean something."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_vae(vae: AutoencoderKL, scenes: dt.SceneBatcher, args: argparse.Namespace, seconds: float) -> float:
    """Train the VAE for ``seconds`` on fresh scenes; return the final MSE (images in [-1, 1])."""
    device = scenes.device
    # fine-tuning keeps the encoder, so the latents the UNet learnt stay valid
    params = (
        list(vae.parameters())
        if args.init_from is None
        else [*vae.decoder.parameters(), *vae.post_quant_conv.parameters()]
    )
    opt = torch.optim.AdamW(params, lr=args.vae_lr, weight_decay=0.0, fused=device.type == "cuda")
    gen = torch.Generator(device=device).manual_seed(args.seed + 10)
    worst = max(1, ds.IMAGE_SIZE * ds.IMAGE_SIZE // 100)
    vae.train()
    t0 = time.monotonic()
    step, mse_recent, last_log = 0, float("nan"), t0
    while True:
        progress = (time.monotonic() - t0) / seconds
        if progress >= 1.0:
            break
        for group in opt.param_groups:
            group["lr"] = dt.cosine_lr(progress, args.vae_lr, warmup=0.05, floor=0.05)
        x, _ = scenes.sample(args.vae_batch)
        with torch.set_grad_enabled(args.init_from is None):
            posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=gen, device=device)
        if args.latent_noise:  # a decoder that also sees latents a little off draws the UNet's cleanly
            scale = args.latent_noise * z.std() * torch.rand(z.shape[0], 1, 1, 1, generator=gen, device=device)
            z = z + scale * torch.randn(z.shape, generator=gen, device=device)
        recon = vae.decode(z).sample
        err = (recon - x) ** 2
        per_pixel = err.sum(dim=1).flatten(1)
        loss = (
            err.mean()
            + 0.5 * (recon - x).abs().mean()
            + 0.1 * per_pixel.topk(worst, dim=1).values.mean()
            + 1e-6 * posterior.kl().mean()
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        if time.monotonic() - last_log > 10.0 or step == 1:
            mse_recent = err.mean().item()
            last_log = time.monotonic()
            log(f"vae step {step} mse {mse_recent:.4f} worst-1% {per_pixel.topk(worst, dim=1).values.mean():.3f}")
    vae.eval()
    mse_recent = err.mean().item()
    log(f"vae done: {step} steps of {args.vae_batch} in {time.monotonic() - t0:.0f}s, mse {mse_recent:.4f}")
    return mse_recent


@torch.no_grad()
def check_vae(vae: AutoencoderKL, device: torch.device) -> str:
    """Round-trip the 20 evaluation scenes (centred) and report MSE, shapes and stray pixels."""
    combos = [(c, s, b) for c, s, b in ds.all_combinations() if ds.caption(c, s, b) in {p for p, *_ in ds.EVAL_PROMPTS}]
    images = np.stack([ds.draw_scene(c, s, b) for c, s, b in combos])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().to(device) / 127.5 - 1.0
    recon = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
    out = ((recon + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    shapes = sum(ds.classify_shape(o, c, b) == s for o, (c, s, b) in zip(out, combos, strict=True))
    stray = [ds.stray_pixels(o, c, b) for o, (c, s, b) in zip(out, combos, strict=True)]
    mse = float(((recon - x) ** 2).mean())
    return f"vae round trip: mse {mse:.4f}, shapes {shapes}/{len(combos)}, stray px max {max(stray)} sum {sum(stray)}"


@torch.no_grad()
def encode_pool(vae: AutoencoderKL, scenes: dt.SceneBatcher, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior means (unscaled) of ``n`` fresh scenes and each one's combination index."""
    latents, which = [], []
    for start in range(0, n, 4096):
        x, w = scenes.sample(min(4096, n - start))
        latents.append(vae.encode(x).latent_dist.mean)
        which.append(w)
    return torch.cat(latents), torch.cat(which)


def make_pipeline(vae: Any, text_encoder: Any, tokenizer: Any, unet: Any) -> StableDiffusionPipeline:
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


def score_seeds(pipe: StableDiffusionPipeline, seeds: list[int]) -> dict[str, Any]:
    """Evaluate ``pipe`` on ``seeds`` in full fp32 (no TF32): per-seed lines and mean accuracies."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        summaries = [summarise(results) for results in evaluate_batched(pipe, seeds)]
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
    colour = float(np.mean([s["overall"] for s in summaries]))
    shape = float(np.mean([s["shape_accuracy"] for s in summaries]))
    blotted = float(np.mean([s["blotted"] for s in summaries])) / len(ds.EVAL_PROMPTS)
    return {
        "colour": colour,
        "shape": shape,
        "blotted": blotted,
        "score": colour + shape - 0.5 * blotted,
        "lines": [f"seed {seed}: {s['line']}" for seed, s in zip(seeds, summaries, strict=True)],
    }


def save_pipeline(pipe: StableDiffusionPipeline, out: Path, meta: dict[str, object]) -> None:
    """Write the pipeline (fp32 safetensors, on CPU) to ``out`` atomically, plus ``training_info.json``."""
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    pipe.to("cpu")
    pipe.save_pretrained(tmp, safe_serialization=True)
    (tmp / "training_info.json").write_text(json.dumps(meta, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


def main() -> None:
    """Run the three phases within the budget, save the best weights and evaluate the saved folder."""
    args = parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
        log(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}")
    else:
        torch.set_num_threads(args.threads)
        log(f"device cpu ({args.threads} threads), torch {torch.__version__}")
    log(f"diffusers {diffusers.__version__}, transformers {transformers.__version__}")
    clock = Clock(args.minutes, args.final_reserve)
    torch.manual_seed(args.seed)
    combos = ds.training_combinations()
    scenes = dt.SceneBatcher(combos, device, args.seed)
    tokenizer = dt.build_tokenizer()
    log(f"{len(combos)} training combinations, vocab {len(tokenizer)}, {clock.left():.0f}s of training left")

    # ---- phase 1: VAE -------------------------------------------------------
    init = None
    if args.init_from is not None:
        init = StableDiffusionPipeline.from_pretrained(args.init_from)
        log(f"fine-tuning {args.init_from}")
    vae = (dt.build_vae() if init is None else init.vae).to(device)
    vae_seconds = args.vae_share * clock.left()
    vae_mse = train_vae(vae, scenes, args, vae_seconds)
    vae.requires_grad_(False)
    log(check_vae(vae, device))
    if args.decoder_only:
        assert init is not None
        init.vae = vae
        meta = {"decoder_only": True, "init_from": str(args.init_from), "vae_mse": vae_mse,
                "args": {k: str(v) for k, v in vars(args).items()}}  # fmt: skip
        pipe = make_pipeline(vae, init.text_encoder, init.tokenizer, init.unet)
        save_pipeline(pipe, args.out, meta)
        saved = StableDiffusionPipeline.from_pretrained(args.out).to(device)
        saved.set_progress_bar_config(disable=True)
        for line in score_seeds(saved, args.report_seeds)["lines"]:
            log(f"saved model, {line}")
        log(f"total {time.monotonic() - STARTED:.0f}s")
        return

    # ---- phase 2: latents ----------------------------------------------------
    latents, which = encode_pool(vae, scenes, args.pool)
    scaling = float(1.0 / latents.std()) if init is None else float(vae.config.scaling_factor)
    vae.register_to_config(scaling_factor=scaling)
    latents *= scaling
    log(f"latent pool {tuple(latents.shape)}, scaling_factor {scaling:.4f}")
    captions = [ds.caption(*c) for c in combos]
    token = tokenizer(captions, padding="max_length", max_length=dt.MAX_TOKENS, return_tensors="pt")
    ids_table = token.input_ids.to(device)
    ids_empty = tokenizer([""], padding="max_length", max_length=dt.MAX_TOKENS, return_tensors="pt").input_ids
    ids_empty = ids_empty[0].to(device)
    content = (ids_table != tokenizer.bos_token_id) & (ids_table != tokenizer.eos_token_id)

    # ---- phase 3: UNet + text encoder ----------------------------------------
    torch.manual_seed(args.seed + 1)
    text_encoder = (dt.build_text_encoder(tokenizer, args.text_hidden) if init is None else init.text_encoder).to(
        device
    )
    unet = (dt.build_unet(args.text_hidden) if init is None else init.unet).to(device)
    round_ones = torch.tensor([s != "triangle" for _, s, _ in combos], device=device)[which].nonzero()[:, 0]
    token_head = torch.nn.Linear(args.text_hidden, len(tokenizer)).to(device)
    log(
        f"params: vae {dt.n_params(vae) / 1e6:.3f}M text {dt.n_params(text_encoder) / 1e6:.3f}M "
        f"unet {dt.n_params(unet) / 1e6:.3f}M"
    )
    text_params = [*text_encoder.parameters(), *token_head.parameters()]
    opt = torch.optim.AdamW(
        [
            {"params": list(unet.parameters()), "weight_decay": 0.01, "mult": 1.0},
            {"params": text_params, "weight_decay": 0.0, "mult": args.text_lr_mult},
        ],
        lr=args.lr,
        fused=device.type == "cuda",
    )
    noise_scheduler = DDPMScheduler(**SCHEDULER_CONFIG)
    alphas_cumprod = noise_scheduler.alphas_cumprod.to(device)
    snr_all = alphas_cumprod / (1.0 - alphas_cumprod)
    sqrt_a, sqrt_1ma = alphas_cumprod.sqrt(), (1.0 - alphas_cumprod).sqrt()
    ema_unet, ema_text = dt.EMA(unet, args.ema_decay), dt.EMA(text_encoder, args.ema_decay)
    gen = torch.Generator(device=device).manual_seed(args.seed + 2)

    eval_unet, eval_text = copy.deepcopy(unet).eval(), copy.deepcopy(text_encoder).eval()
    eval_pipe = make_pipeline(vae, eval_text, tokenizer, eval_unet)
    best: dict[str, Any] = {"score": -1.0}

    def consider(step: int, label: str, load: Callable[[], None]) -> None:
        load()
        result = score_seeds(eval_pipe, args.select_seeds)
        for line in result["lines"]:
            log(f"eval step {step} {label}: {line}")
        if result["score"] >= best["score"]:
            best.update(
                score=result["score"],
                step=step,
                weights=label,
                colour=result["colour"],
                shape=result["shape"],
                blotted=result["blotted"],
                unet={k: v.detach().to("cpu", copy=True) for k, v in eval_unet.state_dict().items()},
                text={k: v.detach().to("cpu", copy=True) for k, v in eval_text.state_dict().items()},
            )
            log(f"best so far: step {step} {label}, shape {result['shape']:.1%} colour {result['colour']:.1%}")

    def load_ema() -> None:
        ema_unet.copy_to(eval_unet)
        ema_text.copy_to(eval_text)

    def load_raw() -> None:
        eval_unet.load_state_dict(unet.state_dict())
        eval_text.load_state_dict(text_encoder.state_dict())

    def run_evals(step: int) -> None:
        for label in args.eval_weights:
            consider(step, label, load_ema if label == "ema" else load_raw)

    eval_at = [0.4 + 0.6 * (i + 1) / args.evals for i in range(args.evals)]
    unet.train()
    text_encoder.train()
    t0 = time.monotonic()
    unet_seconds = clock.left()
    eval_seconds = 0.0
    step, last_log = 0, t0
    try:
        while True:
            # evaluation time counts: the last evaluation starts when the phase's time is up
            progress = (time.monotonic() - t0) / unet_seconds
            if progress >= eval_at[0] or clock.left() <= 0:
                eval_at.pop(0)
                settle(device)
                e0 = time.monotonic()
                run_evals(step)
                eval_seconds += time.monotonic() - e0
                if not eval_at or clock.left() <= 0:
                    break
                unet.train()
                text_encoder.train()
                continue
            lr = dt.cosine_lr(min(progress, 1.0), args.lr, warmup=0.04)
            for group in opt.param_groups:
                group["lr"] = lr * group["mult"]
            idx = torch.randint(0, len(latents), (args.batch,), generator=gen, device=device)
            n_focus = round(args.shape_focus * args.batch)
            if n_focus:  # circles and squares are what a prompt's shape word must tell apart
                pick = torch.randint(0, len(round_ones), (n_focus,), generator=gen, device=device)
                idx[:n_focus] = round_ones[pick]
            x0 = latents[idx]
            ids = ids_table[which[idx]]
            keep = torch.rand(args.batch, generator=gen, device=device) >= args.uncond_prob
            ids = torch.where(keep[:, None], ids, ids_empty[None])
            noise = torch.randn(x0.shape, generator=gen, device=device)
            t = torch.randint(0, len(alphas_cumprod), (args.batch,), generator=gen, device=device)
            a, s = sqrt_a[t][:, None, None, None], sqrt_1ma[t][:, None, None, None]
            xt = a * x0 + s * noise
            target = a * noise - s * x0
            hidden = text_encoder(ids)[0]
            pred = unet(xt, t, encoder_hidden_states=hidden).sample
            snr = snr_all[t]
            weight = torch.clamp(snr, max=args.snr_gamma) / (snr + 1.0)
            per_sample = F.mse_loss(pred, target, reduction="none").mean(dim=(1, 2, 3))
            loss = (per_sample * weight).mean()
            # every caption word must stay readable from its hidden state (dropped captions have none)
            words = (content[which[idx]] & keep[:, None]).float()
            ce = F.cross_entropy(token_head(hidden).transpose(1, 2), ids, reduction="none")
            token_loss = (ce * words).sum() / words.sum().clamp(min=1.0)
            total = loss + args.token_loss * token_loss
            opt.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
            torch.nn.utils.clip_grad_norm_(text_params, 1.0)
            opt.step()
            ema_unet.update(unet, step)
            ema_text.update(text_encoder, step)
            step += 1
            if time.monotonic() - last_log > 10.0 or step == 1:
                last_log = time.monotonic()
                rate = (time.monotonic() - t0 - eval_seconds) / step
                log(
                    f"unet step {step} v-mse {per_sample.mean().item():.4f} "
                    f"token-ce {token_loss.item():.3f} lr {lr:.2e} progress {progress:.0%} ({rate * 1000:.0f} ms/step)"
                )
    except Exception:  # a GPU run is a single shot: keep what was learnt so far
        log(f"training stopped at step {step} by an error:\n{traceback.format_exc()}")
        if "unet" not in best:
            load_ema()
            best.update(step=step, weights="ema (not evaluated)", colour=None, shape=None, blotted=None)
            best.update(unet=eval_unet.state_dict(), text=eval_text.state_dict())
    log(f"unet done: {step} steps of {args.batch} ({eval_seconds:.0f}s of evaluations)")

    # ---- save the best weights and evaluate the saved folder ------------------
    eval_unet.load_state_dict(best["unet"])
    eval_text.load_state_dict(best["text"])
    meta = {
        "step": best["step"],
        "weights": best["weights"],
        "selection": {
            "seeds": args.select_seeds,
            "shape_accuracy": best["shape"],
            "colour_accuracy": best["colour"],
            "blotted_share": best["blotted"],
        },
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "init_from": str(args.init_from),
        "vae_mse": vae_mse,
        "scaling_factor": scaling,
        "args": {k: str(v) for k, v in vars(args).items()},
        "params": {"vae": dt.n_params(vae), "text_encoder": dt.n_params(eval_text), "unet": dt.n_params(eval_unet)},
        "train_seconds": round(time.monotonic() - STARTED, 1),
    }
    save_pipeline(eval_pipe, args.out, meta)
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    log(f"saved step {best['step']} ({best['weights']} weights) to {args.out}, {size / 1e6:.1f} MB")
    try:
        saved = StableDiffusionPipeline.from_pretrained(args.out).to(device)
        saved.set_progress_bar_config(disable=True)
        for line in score_seeds(saved, args.report_seeds)["lines"]:
            log(f"saved model, {line}")
    finally:
        log(f"total {time.monotonic() - STARTED:.0f}s")


if __name__ == "__main__":
    main()
