# mypy: disable-error-code="no-untyped-call"
"""Build tiny random-weight diffusers pipelines with the architecture of real model families.

Everything is built offline from configs (no hub access). Weights are random but seeded; configs
mirror the real checkpoints (schedulers, prediction types, VAE scale factor 8, text-encoder wiring,
latent channels, scaling/shift factors); only widths and depths are shrunk, so each folder is a few MB
and a 64x64, 4-step generation takes well under a second on CPU.

    python scripts/make_tiny_models.py OUT_DIR [--arch sd15 --arch sdxl ...] [--single-file]

writes ``OUT_DIR/<arch>`` (and ``OUT_DIR/<arch>.safetensors`` for SD1.x/SD2.x/SDXL with ``--single-file``).
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import diffusers
import torch
import transformers
from safetensors.torch import load_file, save_file

ARCHS: tuple[str, ...] = ("sd15", "sd21", "sdxl", "sd3", "zimage")
SINGLE_FILE_ARCHS: tuple[str, ...] = ("sd15", "sd21", "sdxl")

T = TypeVar("T")
Weights = dict[str, torch.Tensor]

_WORDS = """
a an the of in on at with and or by for to from under over near beside photo photograph picture
image painting drawing sketch portrait landscape illustration render cat cats dog dogs man woman
person people girl boy child face eyes hair horse bird fish tree trees flower flowers forest mountain
mountains river lake sea ocean beach sky cloud clouds sun moon star stars night day city street
house castle car road bridge garden field snow rain fire water light dark red blue green yellow orange
purple pink black white gray brown golden silver big small tall old young beautiful cute happy sad
detailed high quality best masterpiece realistic cinematic lighting style art digital oil watercolor
anime sunset sunrise morning evening winter summer spring autumn standing sitting running wearing
hat dress shirt astronaut riding robot space planet table cup apple blurry ugly low lowres bad
""".split()  # noqa: SIM905 - a word list reads better as text
_QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
_QWEN_CHAT_TEMPLATE = (  # Qwen3's template, minus tools and multi-turn thinking bookkeeping
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}"
)


# ------------------------------------------------------------------------------------------ tokenizers
def _byte_chars() -> list[str]:
    """GPT-2/CLIP byte -> printable unicode table, in byte order."""
    keep = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)}
    extra = iter(range(256, 512))
    return [chr(b) if b in keep else chr(next(extra)) for b in range(256)]


def _train_bpe(words: list[str], vocab: dict[str, int], end: str = "") -> list[tuple[str, str]]:
    """Train BPE on ``words`` until each is a single token (replaying the merges reproduces that)."""
    corpus = [[*w[:-1], w[-1] + end] for w in sorted(set(words)) if len(w) > 1]
    merges: list[tuple[str, str]] = []
    while pairs := Counter(p for w in corpus for p in itertools.pairwise(w)):
        a, b = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append((a, b))
        vocab.setdefault(a + b, len(vocab))
        for i, w in enumerate(corpus):
            out: list[str] = []
            for sym in w:
                if out and out[-1] == a and sym == b:
                    out[-1] = a + b
                else:
                    out.append(sym)
            corpus[i] = out
    return merges


def _clip_tokenizer(pad_token: str = "<|endoftext|>") -> Any:
    """Byte-level CLIP BPE tokenizer with the openai/clip-vit-large-patch14 vocab layout, in miniature."""
    chars = _byte_chars()
    vocab = {tok: i for i, tok in enumerate(chars + [c + "</w>" for c in chars])}
    merges: Any = _train_bpe(_WORDS, vocab, end="</w>")  # transformers says list[str]; it needs tuples
    vocab.update({s: len(vocab) + i for i, s in enumerate(("<|startoftext|>", "<|endoftext|>"))})
    return transformers.CLIPTokenizer(vocab=vocab, merges=merges, pad_token=pad_token, model_max_length=77)


def _qwen_tokenizer() -> Any:
    """Byte-level Qwen2 tokenizer with Qwen's chat special tokens and a Qwen3-like chat template."""
    vocab = {c: i for i, c in enumerate(_byte_chars())}
    words = [*_WORDS, "user", "assistant", "system"]
    merges: Any = _train_bpe(words + ["Ġ" + w for w in words], vocab)
    vocab.update({s: len(vocab) + i for i, s in enumerate(_QWEN_SPECIAL)})
    tok = transformers.Qwen2Tokenizer(vocab=vocab, merges=merges, eos_token="<|im_end|>", model_max_length=131072)
    tok.add_tokens(_QWEN_SPECIAL[1:], special_tokens=True)
    tok.chat_template = _QWEN_CHAT_TEMPLATE
    return tok


# ------------------------------------------------------------------------------------------ models
def _seeded(seed: int, factory: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    torch.manual_seed(seed)
    return factory(*args, **kwargs)


def _clip_text(tok: Any, hidden: int, act: str, *, projection: bool) -> Any:
    config = transformers.CLIPTextConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 4,
        projection_dim=hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act=act,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,  # pooling picks the first EOS position
        pad_token_id=tok.pad_token_id,
    )
    return (transformers.CLIPTextModelWithProjection if projection else transformers.CLIPTextModel)(config)


def _vae(latent_channels: int, scaling: float, shift: float | None = None, size: int = 512) -> Any:
    """4-level AutoencoderKL (scale factor 8); with ``shift`` it is SD3/Flux-style (no quant convs)."""
    return diffusers.AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        norm_num_groups=8,
        latent_channels=latent_channels,
        sample_size=size,
        scaling_factor=scaling,
        shift_factor=shift,
        use_quant_conv=shift is None,
        use_post_quant_conv=shift is None,
    )


def _unet(**kwargs: Any) -> Any:
    """2-level UNet; ``layers_per_block=2`` as in every SD checkpoint (the LDM key layout depends on it)."""
    base = {"block_out_channels": (32, 64), "layers_per_block": 2, "norm_num_groups": 32}
    return diffusers.UNet2DConditionModel(**base, **kwargs)


_SD_BETAS: dict[str, Any] = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "steps_offset": 1,
}
_SD1_BLOCKS: dict[str, Any] = {
    "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 32,
}


# ------------------------------------------------------------------------------------------ per arch
def _sd15(seed: int) -> Any:
    tok = _clip_tokenizer()
    return diffusers.StableDiffusionPipeline(
        unet=_seeded(seed, _unet, **_SD1_BLOCKS, attention_head_dim=8, sample_size=64),
        vae=_seeded(seed, _vae, 4, 0.18215),
        text_encoder=_seeded(seed, _clip_text, tok, 32, "quick_gelu", projection=False),
        tokenizer=tok,
        scheduler=diffusers.PNDMScheduler(**_SD_BETAS, skip_prk_steps=True, set_alpha_to_one=False),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _sd21(seed: int) -> Any:
    tok = _clip_tokenizer(pad_token="!")  # OpenCLIP tokenizers pad with "!"
    unet = _seeded(
        seed,
        _unet,
        **_SD1_BLOCKS,
        attention_head_dim=[2, 4],
        use_linear_projection=True,
        upcast_attention=True,
        sample_size=96,
    )
    return diffusers.StableDiffusionPipeline(
        unet=unet,
        vae=_seeded(seed, _vae, 4, 0.18215, size=768),
        text_encoder=_seeded(seed, _clip_text, tok, 32, "gelu", projection=False),
        tokenizer=tok,
        scheduler=diffusers.DDIMScheduler(
            **_SD_BETAS, prediction_type="v_prediction", clip_sample=False, set_alpha_to_one=False
        ),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _sdxl(seed: int) -> Any:
    # CLIP-L (32) and OpenCLIP-bigG (64) differ in width as in the real model: the single-file loader
    # tells the two encoders apart by hidden size.
    tok, tok_2 = _clip_tokenizer(), _clip_tokenizer(pad_token="!")
    unet = _seeded(
        seed,
        _unet,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        transformer_layers_per_block=(1, 2),
        use_linear_projection=True,
        cross_attention_dim=32 + 64,  # concatenated penultimate hidden states
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=64 + 6 * 8,  # pooled (projection_dim) + 6 time ids
        sample_size=128,
    )
    return diffusers.StableDiffusionXLPipeline(
        unet=unet,
        vae=_seeded(seed, _vae, 4, 0.13025, size=1024),
        text_encoder=_seeded(seed, _clip_text, tok, 32, "quick_gelu", projection=False),
        text_encoder_2=_seeded(seed, _clip_text, tok_2, 64, "gelu", projection=True),
        tokenizer=tok,
        tokenizer_2=tok_2,
        scheduler=diffusers.EulerDiscreteScheduler(
            **_SD_BETAS, interpolation_type="linear", timestep_spacing="leading", use_karras_sigmas=False
        ),
        force_zeros_for_empty_prompt=True,
    )


def _sd3(seed: int) -> Any:
    tok, tok_2 = _clip_tokenizer(), _clip_tokenizer(pad_token="!")
    transformer = _seeded(
        seed,
        diffusers.SD3Transformer2DModel,
        sample_size=128,
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=128,  # > 32 + 64 (CLIP-L ++ CLIP-G hidden states, zero-padded); T5 slot is zeros
        caption_projection_dim=32,
        pooled_projection_dim=32 + 64,
        pos_embed_max_size=96,  # up to 1536 px
    )
    return diffusers.StableDiffusion3Pipeline(
        transformer=transformer,
        vae=_seeded(seed, _vae, 16, 1.5305, 0.0609, size=1024),
        text_encoder=_seeded(seed, _clip_text, tok, 32, "quick_gelu", projection=True),
        text_encoder_2=_seeded(seed, _clip_text, tok_2, 64, "gelu", projection=True),
        text_encoder_3=None,
        tokenizer=tok,
        tokenizer_2=tok_2,
        tokenizer_3=None,
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
    )


def _zimage(seed: int) -> Any:
    tok = _qwen_tokenizer()
    text_config = transformers.Qwen3Config(
        vocab_size=len(tok),
        hidden_size=32,  # == transformer cap_feat_dim
        intermediate_size=64,
        num_hidden_layers=2,  # the pipeline reads hidden_states[-2]
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=40960,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tok.pad_token_id,
    )
    transformer = _seeded(
        seed,
        diffusers.ZImageTransformer2DModel,
        all_patch_size=(2,),
        all_f_patch_size=(1,),
        in_channels=16,
        dim=32,
        n_layers=2,
        n_refiner_layers=1,
        n_heads=2,
        n_kv_heads=2,
        cap_feat_dim=32,
        axes_dims=[4, 6, 6],  # sum == dim // n_heads, like [32, 48, 48] for 3840 // 30
        axes_lens=[1536, 512, 512],
    )
    return diffusers.ZImagePipeline(
        transformer=transformer,
        vae=_seeded(seed, _vae, 16, 0.3611, 0.1159, size=1024),
        text_encoder=_seeded(seed, transformers.Qwen3Model, text_config),
        tokenizer=tok,
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(
            num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=False
        ),
    )


_BUILDERS: dict[str, Callable[[int], Any]] = {
    "sd15": _sd15,
    "sd21": _sd21,
    "sdxl": _sdxl,
    "sd3": _sd3,
    "zimage": _zimage,
}


def build(arch: str, out_dir: Path, seed: int = 0) -> Path:
    """Build the tiny ``arch`` pipeline, save it as a diffusers folder at ``out_dir`` and return it.

    ``torch.manual_seed(seed)`` runs before each component, so equal seeds give identical weights.
    """
    if arch not in _BUILDERS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {ARCHS}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _BUILDERS[arch](seed).save_pretrained(str(out_dir), safe_serialization=True)
    return out_dir


# ------------------------------------------------------------------------------------------ single file
def _load_weights(folder: Path) -> Weights:
    weights: Weights = {}
    for file in sorted(folder.glob("*.safetensors")):
        weights.update(load_file(str(file)))
    return weights


def _unet_to_ldm(sd: Weights, config: dict[str, Any]) -> Weights:
    """Inverse of diffusers' ``convert_ldm_unet_checkpoint``: CompVis ``model.diffusion_model.*`` keys."""
    per = config["layers_per_block"] + 1
    fixed = {
        "time_embedding.linear_1": "time_embed.0",
        "time_embedding.linear_2": "time_embed.2",
        "add_embedding.linear_1": "label_emb.0.0",
        "add_embedding.linear_2": "label_emb.0.2",
        "conv_in": "input_blocks.0.0",
        "conv_norm_out": "out.0",
        "conv_out": "out.2",
    }
    resnet = {
        "norm1": "in_layers.0",
        "conv1": "in_layers.2",
        "norm2": "out_layers.0",
        "conv2": "out_layers.3",
        "time_emb_proj": "emb_layers.1",
        "conv_shortcut": "skip_connection",
    }

    def inner(kind: str, rest: list[str]) -> str:
        return ".".join([resnet[rest[0]], *rest[1:]] if kind == "resnets" else rest)

    out: Weights = {}
    for key, value in sd.items():
        module, _, param = key.rpartition(".")
        p = module.split(".")
        if module in fixed:
            new = fixed[module]
        elif p[0] == "down_blocks" and p[2] == "downsamplers":
            new = f"input_blocks.{(int(p[1]) + 1) * per}.0.op"
        elif p[0] == "down_blocks":
            idx = int(p[1]) * per + int(p[3]) + 1
            new = f"input_blocks.{idx}.{int(p[2] != 'resnets')}.{inner(p[2], p[4:])}"
        elif p[0] == "mid_block":
            new = f"middle_block.{2 * int(p[2]) if p[1] == 'resnets' else 1}.{inner(p[1], p[3:])}"
        elif p[0] == "up_blocks" and p[2] == "upsamplers":
            has_attn = "CrossAttn" in config["up_block_types"][int(p[1])]
            new = f"output_blocks.{int(p[1]) * per + per - 1}.{2 if has_attn else 1}.conv"
        elif p[0] == "up_blocks":
            idx = int(p[1]) * per + int(p[3])
            new = f"output_blocks.{idx}.{int(p[2] != 'resnets')}.{inner(p[2], p[4:])}"
        else:
            raise KeyError(f"unmapped UNet key {key}")
        out[f"model.diffusion_model.{new}.{param}"] = value
    return out


def _vae_to_ldm(sd: Weights, config: dict[str, Any]) -> Weights:
    """Inverse of diffusers' ``convert_ldm_vae_checkpoint``: ``first_stage_model.*`` keys."""
    n_up = len(config["up_block_types"])
    attn = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    out: Weights = {}
    for key, value in sd.items():
        p = key.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut").split(".")
        if p[1] in ("down_blocks", "up_blocks"):
            level = p[2] if p[1] == "down_blocks" else str(n_up - 1 - int(p[2]))  # LDM decoder counts up
            new = ".".join([p[0], p[1][: -len("_blocks")], level, *p[3:]])
            new = new.replace(".resnets.", ".block.").replace(".downsamplers.0.", ".downsample.")
            new = new.replace(".upsamplers.0.", ".upsample.")
        elif p[1:3] == ["mid_block", "resnets"]:
            new = ".".join([p[0], "mid", f"block_{int(p[3]) + 1}", *p[4:]])
        elif p[1] == "mid_block":
            new = ".".join([p[0], "mid.attn_1", attn[".".join(p[4:-1])], p[-1]])
            value = value[:, :, None, None] if value.ndim == 2 else value  # LDM: 1x1 convs
        else:
            new = ".".join(p)
        out[f"first_stage_model.{new}"] = value
    return out


def _clip_to_ldm(sd: Weights, prefix: str) -> Weights:
    """HF CLIP layout, as A1111 SD1.x stores it (``cond_stage_model.transformer.text_model.*``)."""
    return {f"{prefix}text_model.{k.removeprefix('text_model.')}": v for k, v in sd.items()}


def _open_clip_to_ldm(sd: Weights, prefix: str) -> Weights:
    """OpenCLIP layout (SD2.x ``cond_stage_model.model.*``, SDXL ``conditioner.embedders.1.model.*``)."""
    sd = {k.removeprefix("text_model."): v for k, v in sd.items() if "position_ids" not in k}
    out = {
        f"{prefix}token_embedding.weight": sd.pop("embeddings.token_embedding.weight"),
        f"{prefix}positional_embedding": sd.pop("embeddings.position_embedding.weight"),
        f"{prefix}ln_final.weight": sd.pop("final_layer_norm.weight"),
        f"{prefix}ln_final.bias": sd.pop("final_layer_norm.bias"),
    }
    if "text_projection.weight" in sd:
        out[f"{prefix}text_projection"] = sd.pop("text_projection.weight").T.contiguous()
    names = {
        "layer_norm1": "ln_1",
        "layer_norm2": "ln_2",
        "mlp.fc1": "mlp.c_fc",
        "mlp.fc2": "mlp.c_proj",
        "self_attn.out_proj": "attn.out_proj",
    }
    for i in sorted({int(k.split(".")[2]) for k in sd if k.startswith("encoder.layers.")}):
        src, dst = f"encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        for param in ("weight", "bias"):
            for ours, theirs in names.items():
                out[f"{dst}{theirs}.{param}"] = sd.pop(f"{src}{ours}.{param}")
            qkv = [sd.pop(f"{src}self_attn.{x}_proj.{param}") for x in "qkv"]
            out[f"{dst}attn.in_proj_{param}"] = torch.cat(qkv, dim=0)
    if sd:
        raise KeyError(f"unmapped text-encoder keys: {sorted(sd)}")
    return out


def export_single_file(folder: Path, out_file: Path) -> Path:
    """Write an SD1.x/SD2.x/SDXL diffusers ``folder`` as one original-layout (LDM/A1111) safetensors file.

    Load it back offline with
    ``<PipelineClass>.from_single_file(str(out_file), config=str(folder), local_files_only=True)``.
    """
    folder, out_file = Path(folder), Path(out_file)
    pipeline_class = json.loads((folder / "model_index.json").read_text())["_class_name"]

    def config(name: str) -> dict[str, Any]:
        return dict(json.loads((folder / name / "config.json").read_text()))

    ckpt = _unet_to_ldm(_load_weights(folder / "unet"), config("unet"))
    ckpt.update(_vae_to_ldm(_load_weights(folder / "vae"), config("vae")))
    text = _load_weights(folder / "text_encoder")
    if pipeline_class == "StableDiffusionXLPipeline":
        ckpt.update(_clip_to_ldm(text, "conditioner.embedders.0.transformer."))
        text_2 = _load_weights(folder / "text_encoder_2")
        ckpt.update(_open_clip_to_ldm(text_2, "conditioner.embedders.1.model."))
    elif pipeline_class == "StableDiffusionPipeline" and config("text_encoder")["hidden_act"] == "quick_gelu":
        ckpt.update(_clip_to_ldm(text, "cond_stage_model.transformer."))  # SD1.x: OpenAI CLIP-L
    elif pipeline_class == "StableDiffusionPipeline":
        ckpt.update(_open_clip_to_ldm(text, "cond_stage_model.model."))  # SD2.x: OpenCLIP-H
    else:
        raise ValueError(f"single-file export is not supported for {pipeline_class}")
    out_file.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in ckpt.items()}, str(out_file))
    return out_file


# ------------------------------------------------------------------------------------------ CLI
def make_lora(folder: Path, out_file: Path, seed: int = 0, rank: int = 4) -> Path:
    """A LoRA for the UNet of the tiny pipeline at ``folder`` (PEFT, saved with diffusers' helper), random but
    non-zero, so applying it visibly changes images. Returns ``out_file`` (a ``.safetensors`` path)."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = UNet2DConditionModel.from_pretrained(str(folder / "unet"))
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                target_modules=["to_k", "to_q", "to_v", "to_out.0"]))  # fmt: skip
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    out_file.parent.mkdir(parents=True, exist_ok=True)
    StableDiffusionPipeline.save_lora_weights(str(out_file.parent), unet_lora_layers=layers, weight_name=out_file.name)
    return out_file


def main() -> None:
    """CLI: build the requested tiny pipelines under ``OUT_DIR/<arch>``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--arch", action="append", choices=ARCHS, help="repeatable; default: all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--single-file", action="store_true", help=f"also write OUT_DIR/<arch>.safetensors for {SINGLE_FILE_ARCHS}"
    )
    args = parser.parse_args()
    for arch in args.arch or ARCHS:
        folder = build(arch, args.out_dir / arch, seed=args.seed)
        print(folder)
        if args.single_file and arch in SINGLE_FILE_ARCHS:
            print(export_single_file(folder, args.out_dir / f"{arch}.safetensors"))


if __name__ == "__main__":
    main()
