"""What every torch device shares: load in a dtype, memory options, attention choice, warm-up, run a job.

The device classes (`cpu.py`, `cuda.py`, `mps.py`) override only what differs: where the weights go, which
options make sense, how memory is measured and released, what an out-of-memory error looks like.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar, cast

import torch
from diffusers.utils import logging as diffusers_logging
from PIL import Image

from worker.backends import attention
from worker.backends.dtypes import DeviceKind, resolve_dtype
from worker.backends.memory import log_residency, residency, retry_decode_with_tiling
from worker.config import Settings
from worker.engine.protocol import GenerationRequest, Member, OnDrop, StepHooks
from worker.errors import ConfigError, OutOfMemory
from worker.pipelines import envelope, prompts, runner, stepwise
from worker.pipelines.families import get_family
from worker.pipelines.loading import load_pipeline
from worker.pipelines.lora import LoraLibrary
from worker.pipelines.model import LoadedModel
from worker.pipelines.prompts import EmbeddingSpec

log = logging.getLogger(__name__)

TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class TorchBackend:
    """A model on one torch device. Subclasses set `kind` and `_device` and override the device hooks."""

    kind: ClassVar[DeviceKind]
    _device: str

    def __init__(self, settings: Settings) -> None:
        self.family = get_family(settings.sd_version)
        self.model_ref = str(settings.model_path) if settings.model_path else self.family.source
        self.settings = settings
        self.components = settings.components
        self._dtype = resolve_dtype(self.kind, self.family, settings)
        self.check_options(settings)
        self.attention_backend = attention.DEFAULT
        self.loras: LoraLibrary | None = None
        self._model: LoadedModel | None = None  # the denoising pipelines (components all / denoiser)
        self._text: Any = None  # the pipeline whose text encoders /encode runs (components all / text-encoder)
        self._device_lock = threading.Lock()  # a job and an /encode never share the device

    @property
    def device(self) -> str:
        """The torch device string."""
        return self._device

    @property
    def dtype(self) -> str:
        """fp32, fp16 or bf16."""
        return self._dtype

    @property
    def loaded(self) -> bool:
        """True once the model is loaded and warmed."""
        return self._model is not None or self._text is not None

    @property
    def model(self) -> LoadedModel:
        """The loaded model (after `load`)."""
        if self._model is None:
            raise RuntimeError("model not loaded")
        return self._model

    @property
    def default_scheduler(self) -> str:
        """Class name of the model's own scheduler."""
        return type(self.model.default_scheduler).__name__

    @property
    def min_side(self) -> int:
        """Pixels per latent pixel × how far the UNet downsamples (a transformer: its size multiple)."""
        multiple = self.family.size_multiple
        base = self._model.base if self._model is not None else None
        denoiser = getattr(base, "unet", None) or getattr(base, "transformer", None)
        blocks = getattr(getattr(denoiser, "config", None), "block_out_channels", None)
        return multiple * 2 ** (len(blocks) - 1) if blocks else multiple

    @property
    def embedding_spec(self) -> EmbeddingSpec:
        """The prompt-embedding tensors the loaded denoiser accepts (names and shapes)."""
        return self.model.embeddings

    def load(self) -> None:
        """Load the weights, place them, apply the memory options, choose the attention kernel, warm up."""
        if self.loaded:
            return
        start = time.perf_counter()
        diffusers_logging.disable_progress_bar()
        base = load_pipeline(
            self.family,
            self.settings.model_path,
            self.settings.model_config_path,
            TORCH_DTYPES[self._dtype],
            self.settings.components,
            allow_pickle=self.settings.allow_pickle,
        )
        self.place(base)
        if self.components == "text-encoder":
            with self._call_context():
                prompts.encode(base, "warm-up", None, self.family.guidance)  # the warm-up
            self._text = base
        else:
            self._model = self._prepare(base)
            self._text = base if self.components == "all" else None
        log.info(
            "loaded %s (%s, components %s) on %s/%s, attention %s, in %.1fs",
            self.family.name,
            self.model_ref,
            self.components,
            self.device,
            self._dtype,
            self.attention_backend,
            time.perf_counter() - start,
        )

    def _prepare(self, base: Any) -> LoadedModel:
        """Memory options, task variants, the attention kernel and the warm-up of a pipeline with a denoiser."""
        if self.settings.vae_tiling:
            base.vae.enable_tiling()
        if self.settings.vae_slicing:
            base.vae.enable_slicing()
        retry_decode_with_tiling(base.vae, self.is_oom, self.release_memory)
        model = LoadedModel.from_base(self.family, self.model_ref, base)
        model.preview_decoder = self.settings.preview_decoder
        log_residency(base)
        if self.settings.compile:
            model.denoiser.compile()
        self._choose_attention_and_warm_up(model)
        if self.settings.lora_dir is not None:
            cross_dim = getattr(model.denoiser.config, "cross_attention_dim", None)
            self.loras = LoraLibrary(self.settings.lora_dir, None if model.family.flow else cross_dim)
        return model

    def count_steps(self, request: GenerationRequest) -> int:
        """How many denoising steps the model's scheduler will run for this request."""
        return runner.count_steps(self.model, request)

    def generate(
        self, requests: list[GenerationRequest], hooks: list[StepHooks], on_drop: OnDrop
    ) -> list[list[Image.Image] | None]:
        """Run one job or compatible jobs as one pipeline call; running out of memory fails them with
        `out_of_memory` and frees what they held."""
        with self._device_call():
            return runner.run(self.model, requests, hooks, "cpu", on_drop)

    def steps_continuously(self, request: GenerationRequest) -> bool:
        """True if the worker's own denoising loop covers `request` (UNet txt2img of the SD architecture)."""
        return self._model is not None and stepwise.covers(self._model, request)

    def generate_stepwise(self, first: Member, admit: Callable[[], list[Member]]) -> None:
        """Run `first` and the jobs that join it between steps through the worker's own loop."""
        with self._device_call():
            stepwise.run(self.model, first, admit, "cpu")

    def embeddings(self, packed: Mapping[str, Any], guidance: float, max_bytes: int) -> prompts.Tensors:
        """The checked tensors of an embedding envelope for the loaded denoiser."""
        spec = self.embedding_spec
        tensors = envelope.unpack(packed, self.family.name, spec, max_bytes)
        spec.check(tensors, guidance, "prompt_embeds")
        return tensors

    def encode_prompt(
        self, prompt: str, negative_prompt: str | None, guidance: float, dtype: str | None
    ) -> dict[str, Any]:
        """The embedding envelope of the text encoders' output (with the negatives when `guidance` uses them)."""
        if self._text is None:
            raise RuntimeError("no text encoder loaded")
        with self._device_call():
            tensors = prompts.encode(self._text, prompt, negative_prompt, guidance)
        packed = dtype or envelope.envelope_dtype(next(iter(tensors.values())).dtype)
        return envelope.pack(tensors, self.family.name, cast(envelope.EnvelopeDType, packed))

    def info(self) -> dict[str, Any]:
        """Attention kernel in use, device memory and where each component lives, for /health."""
        return {
            "attention_backend": self.attention_backend,
            "memory": self.memory(),
            "components": residency(self._model.base if self._model is not None else self._text),
        }

    # device hooks -------------------------------------------------------------------------------------------

    def check_options(self, settings: Settings) -> None:
        """Refuse options that make no sense on this device."""

    def place(self, pipe: Any) -> None:
        """Move the pipeline's weights to the device (or set up offloading)."""
        pipe.to(self._device)

    def memory(self) -> dict[str, int | None]:
        """Bytes allocated / reserved / total on the device."""
        return {"allocated": None, "reserved": None, "total": None}

    def release_memory(self) -> None:
        """Give cached memory back after a failure."""
        gc.collect()

    def is_oom(self, exc: BaseException) -> bool:
        """True if `exc` means the device ran out of memory."""
        return isinstance(exc, torch.OutOfMemoryError)

    # ---------------------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _device_call(self) -> Iterator[None]:
        """Device work (a pipeline call or /encode), one at a time: inference mode and attention kernel; out of
        memory becomes `OutOfMemory` and frees what it held."""
        try:
            with self._device_lock, self._call_context():
                yield
        except Exception as exc:
            if not self.is_oom(exc):
                raise
            self.release_memory()
            raise OutOfMemory(f"out of memory on {self.device}: {exc}") from exc

    @contextlib.contextmanager
    def _call_context(self) -> Iterator[None]:
        with torch.inference_mode(), attention.call_context(self.attention_backend):
            yield

    def _warm_up(self, model: LoadedModel) -> None:
        # with torch.compile, warm up at the family's size so the first request does not recompile
        size = model.family.width if self.settings.compile else None
        with self._call_context():
            request = runner.warm_up(model, generator_device="cpu", size=size)
            if self.settings.batching == "continuous" and stepwise.covers(model, request):
                stepwise.warm_up(model, request, generator_device="cpu")  # the loop txt2img jobs run through

    def _choose_attention_and_warm_up(self, model: LoadedModel) -> None:
        """The warm-up doubles as the probe: a flash kernel that cannot run here fails it."""
        mode = self.settings.use_flash_attn
        if mode != "off":
            tried = []
            for candidate in attention.candidates(model.denoiser):
                try:
                    attention.apply(model.denoiser, candidate)
                    self.attention_backend = candidate
                    self._warm_up(model)
                    return
                except Exception as exc:
                    tried.append(f"{candidate} ({type(exc).__name__}: {str(exc)[:120]})")
                    attention.apply(model.denoiser, attention.DEFAULT)
                    self.attention_backend = attention.DEFAULT
            message = f"no flash attention kernel runs on {self.device}/{self._dtype}; tried " + "; ".join(tried)
            if mode == "require":
                raise ConfigError(f"--use-flash-attn=require: {message}")
            log.warning("--use-flash-attn: %s; falling back to %s", message, attention.DEFAULT)
        self._warm_up(model)
