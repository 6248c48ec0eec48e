"""The CPU backend: fp32 by default (diffusers' default, what equality tests compare against), bf16 opt-in."""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
from diffusers.utils import logging as diffusers_logging
from PIL import Image

from worker.backends.base import StepHooks
from worker.config import Settings
from worker.engine.request import GenerationRequest
from worker.errors import InvalidRequest, OutOfMemory
from worker.pipelines import runner
from worker.pipelines.families import get_family
from worker.pipelines.loading import load_model
from worker.pipelines.model import LoadedModel

log = logging.getLogger(__name__)

TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class CpuBackend:
    """Runs the model on the CPU."""

    def __init__(self, settings: Settings) -> None:
        self.family = get_family(settings.sd_version)
        self.model_ref = str(settings.model_path) if settings.model_path else self.family.source
        self._settings = settings
        self._dtype = "fp32" if settings.dtype == "auto" else settings.dtype
        if self._dtype == "fp16":
            raise InvalidRequest(
                "fp16 on CPU is about 20x slower than fp32; use --dtype fp32 (default) or bf16", field="dtype"
            )
        self._model: LoadedModel | None = None

    @property
    def device(self) -> str:
        """Always "cpu"."""
        return "cpu"

    @property
    def dtype(self) -> str:
        """fp32 or bf16."""
        return self._dtype

    @property
    def loaded(self) -> bool:
        """True once the model is in memory."""
        return self._model is not None

    @property
    def default_scheduler(self) -> str:
        """Class name of the model's own scheduler."""
        return type(self.model.default_scheduler).__name__

    @property
    def model(self) -> LoadedModel:
        """The loaded model (after `load`)."""
        if self._model is None:
            raise RuntimeError("model not loaded")
        return self._model

    def load(self) -> None:
        """Load the weights onto the CPU in the chosen dtype (once)."""
        if self._model is not None:
            return
        start = time.perf_counter()
        diffusers_logging.disable_progress_bar()
        self._model = load_model(
            self.family, self._settings.model_path, self._settings.model_config_path, TORCH_DTYPES[self._dtype]
        )
        self.model_ref = self._model.ref
        with torch.inference_mode():
            runner.warm_up(self._model, generator_device="cpu")
        log.info(
            "loaded %s (%s) on cpu/%s in %.1fs",
            self.family.name,
            self.model_ref,
            self._dtype,
            time.perf_counter() - start,
        )

    def count_steps(self, request: GenerationRequest) -> int:
        """How many denoising steps the model's scheduler will run for this request."""
        return runner.count_steps(self.model, request)

    def generate(self, request: GenerationRequest, hooks: StepHooks) -> list[Image.Image]:
        """Run the job under inference mode; out-of-memory becomes an `out_of_memory` job error."""
        try:
            with torch.inference_mode():
                return runner.run(self.model, request, hooks, generator_device="cpu")
        except (torch.OutOfMemoryError, MemoryError) as exc:
            raise OutOfMemory(f"out of memory on cpu: {exc}") from exc

    def info(self) -> dict[str, Any]:
        """CPU facts for /health."""
        return {"attention_backend": "sdpa", "threads": torch.get_num_threads()}
