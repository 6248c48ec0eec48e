"""GPU benchmark: full-size SD1.5 and SDXL architectures (real configs, random weights, the same FLOPs as the
real models) through the worker's backend: eager vs --compile vs --use-flash-attn.

    python scripts/bench_gpu.py                 # on a CUDA machine: 512²×50 (SD1.5) and 1024²×30 (SDXL)
    python scripts/bench_gpu.py --smoke         # tiny configs on the CPU, to check the script itself

Prints it/s, end-to-end seconds per image, achieved TFLOP/s of the denoiser and its share of the GPU's
bf16 dense peak (from a table by device name, or --peak-tflops).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import transformers
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_tiny_models

from worker.backends.resolver import create_backend
from worker.config import Settings
from worker.engine.protocol import GenerationRequest

PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "4090": 165.0}
SCALED_LINEAR = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "steps_offset": 1}

SD15_UNET = {
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "sample_size": 64,
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
}
SDXL_UNET = {
    "block_out_channels": (320, 640, 1280),
    "layers_per_block": 2,
    "cross_attention_dim": 2048,
    "attention_head_dim": (5, 10, 20),
    "transformer_layers_per_block": (1, 2, 10),
    "sample_size": 128,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
}
VAE = {
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "latent_channels": 4,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
}
CLIP_L = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "hidden_act": "quick_gelu",
    "projection_dim": 768,
}
CLIP_G = {
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_hidden_layers": 32,
    "num_attention_heads": 20,
    "hidden_act": "gelu",
    "projection_dim": 1280,
}


def shrink(config: dict[str, Any]) -> dict[str, Any]:
    """The --smoke version of a config: same layout, tiny widths and depths."""
    small = dict(config)
    if "block_out_channels" in small:
        small["block_out_channels"] = tuple(32 * (i + 1) for i in range(len(config["block_out_channels"])))
        small["norm_num_groups"] = 32
    for key in ("cross_attention_dim", "hidden_size", "projection_dim"):
        if key in small:
            small[key] = 64 if key != "cross_attention_dim" or "addition_embed_type" not in small else 128
    if "addition_embed_type" in small:
        small["transformer_layers_per_block"] = (1, 1, 1)
        small["attention_head_dim"] = (2, 4, 8)
        small["projection_class_embeddings_input_dim"] = 64 + 6 * 256
    if "intermediate_size" in small:
        small.update(intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
    return small


def text_encoder(config: dict[str, Any], tokenizer: Any, projection: bool) -> Any:
    cfg = transformers.CLIPTextConfig(
        vocab_size=49408,
        max_position_embeddings=77,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        pad_token_id=1,
        **config,
    )
    cls = transformers.CLIPTextModelWithProjection if projection else transformers.CLIPTextModel
    return cls(cfg)


def build(arch: str, folder: Path, smoke: bool) -> Path:
    """Write a random-weight pipeline with the real architecture of `arch` (sd15 or sdxl) to `folder`."""
    fit = shrink if smoke else (lambda c: c)
    torch.manual_seed(0)
    tokenizer = make_tiny_models._clip_tokenizer()
    if arch == "sd15":
        pipe: Any = StableDiffusionPipeline(
            vae=AutoencoderKL(**fit(VAE), scaling_factor=0.18215),
            text_encoder=text_encoder(fit(CLIP_L), tokenizer, projection=False),
            tokenizer=tokenizer,
            unet=UNet2DConditionModel(**fit(SD15_UNET)),
            scheduler=PNDMScheduler(**SCALED_LINEAR, skip_prk_steps=True, set_alpha_to_one=False),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    else:
        second = make_tiny_models._clip_tokenizer(pad_token="!")
        pipe = StableDiffusionXLPipeline(
            vae=AutoencoderKL(**fit(VAE), scaling_factor=0.13025, force_upcast=True),
            text_encoder=text_encoder(fit(CLIP_L), tokenizer, projection=False),
            tokenizer=tokenizer,
            text_encoder_2=text_encoder(fit(CLIP_G), second, projection=True),
            tokenizer_2=second,
            unet=UNet2DConditionModel(**fit(SDXL_UNET)),
            scheduler=EulerDiscreteScheduler(**SCALED_LINEAR, timestep_spacing="leading"),
        )
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return folder


class Timer:
    """StepHooks that record when denoising starts and each step ends."""

    def __init__(self) -> None:
        self.denoise_start = 0.0
        self.step_times: list[float] = []

    def stage(self, name: str) -> None:
        if name == "denoising":
            self.denoise_start = time.perf_counter()

    def step(self, step: int) -> None:
        self.step_times.append(time.perf_counter())

    def check(self) -> None:
        pass

    def wants_preview(self, step: int) -> int:
        return 0

    def preview(self, step: int, images: Any) -> None:
        pass


def denoiser_flops(backend: Any, size: int) -> float:
    """FLOPs of one denoiser call with classifier-free guidance (batch 2) at `size` pixels."""
    unet = backend.model.denoiser
    dtype, device = unet.dtype, unet.device
    latent = torch.randn(2, 4, size // 8, size // 8, dtype=dtype, device=device)
    text = torch.randn(2, 77, unet.config.cross_attention_dim, dtype=dtype, device=device)
    extra = {}
    if unet.config.addition_embed_type == "text_time":
        pooled = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
        extra = {
            "added_cond_kwargs": {
                "text_embeds": torch.randn(2, pooled, dtype=dtype, device=device),
                "time_ids": torch.randn(2, 6, dtype=dtype, device=device),
            }
        }
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        unet(latent, torch.tensor([500] * 2, device=device), encoder_hidden_states=text, **extra)
    return float(counter.get_total_flops())


def run_mode(folder: Path, family: str, mode: str, size: int, steps: int, device: str, runs: int) -> dict[str, Any]:
    """Load a backend with the mode's options and time `runs` jobs."""
    options: dict[str, Any] = {"compile": mode == "compile", "use_flash_attn": "auto" if mode == "flash" else "off"}
    backend = create_backend(Settings(sd_version=family, model_path=folder, device=device, **options))  # type: ignore[arg-type]
    backend.load()
    request = GenerationRequest(
        task="txt2img",
        prompt="a red cat on a beach",
        negative_prompt=None,
        steps=steps,
        guidance_scale=7.5,
        seeds=(1,),
        width=size,
        height=size,
        scheduler=None,
        output_format="png",
    )
    backend.generate([request], [Timer()], on_drop=_reraise)  # warm (compile: at this size)
    rates, totals = [], []
    for _ in range(runs):
        timer = Timer()
        start = time.perf_counter()
        backend.generate([request], [timer], on_drop=_reraise)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        totals.append(time.perf_counter() - start)
        rates.append(len(timer.step_times) / (timer.step_times[-1] - timer.denoise_start))
    flops = denoiser_flops(backend, size)
    it_s = sorted(rates)[len(rates) // 2]
    return {
        "mode": mode,
        "attention": backend.attention_backend,
        "dtype": backend.dtype,
        "it_s": it_s,
        "seconds": sorted(totals)[len(totals) // 2],
        "tflops": flops * it_s / 1e12,
    }


def peak_tflops(override: float | None) -> float | None:
    if override is not None or not torch.cuda.is_available():
        return override
    name = torch.cuda.get_device_name()
    return next((peak for key, peak in PEAK_BF16_TFLOPS.items() if key in name), None)


def _reraise(index: int, exc: Exception) -> None:
    raise exc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny configs on the CPU (checks the script)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--modes", default="eager,compile,flash")
    parser.add_argument("--peak-tflops", type=float)
    args = parser.parse_args()
    device = "cpu" if args.smoke else "cuda"
    plans = [("sd15", "v1-5", 512, 50), ("sdxl", "xl", 1024, 30)]
    if args.smoke:
        plans = [("sd15", "v1-5", 64, 4), ("sdxl", "xl", 64, 4)]
    peak = peak_tflops(args.peak_tflops)
    where = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(json.dumps({"device": where, "torch": torch.__version__, "peak_bf16_tflops": peak}))
    print(
        f"{'model':6} {'size':>10} {'mode':8} {'attention':14} {'dtype':5} {'it/s':>7} {'s/image':>8} "
        f"{'TFLOP/s':>8} {'% peak':>7}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for arch, family, size, steps in plans:
            folder = build(arch, Path(tmp) / arch, args.smoke)
            for mode in args.modes.split(","):
                r = run_mode(folder, family, mode, size, steps, device, args.runs)
                share = f"{100 * r['tflops'] / peak:6.1f}%" if peak else "     -"
                print(
                    f"{arch:6} {f'{size}²×{steps}':>10} {r['mode']:8} {r['attention']:14} {r['dtype']:5} "
                    f"{r['it_s']:7.2f} {r['seconds']:8.2f} {r['tflops']:8.1f} {share:>7}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
