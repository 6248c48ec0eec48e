"""The seam between the engine and a device: `ImageGenerationBackend`, and the hooks a job gives it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from PIL import Image

from worker.config import Components
from worker.engine.request import GenerationRequest
from worker.pipelines.families import Family
from worker.pipelines.lora import LoraLibrary
from worker.pipelines.prompts import EmbeddingSpec, Tensors


class StepHooks(Protocol):
    """How a running pipeline reports to its job; `step` and `check` raise to stop the job."""

    def stage(self, name: str) -> None:
        """Enter a stage: encoding_prompt, denoising, decoding."""

    def step(self, step: int) -> None:
        """Denoising step `step` (1-based) finished. Raises JobCancelled / JobTimeout to stop."""

    def check(self) -> None:
        """Raise if the job should stop now."""

    def wants_preview(self, step: int) -> bool:
        """True if an intermediate image should be sent after `step`."""

    def preview(self, step: int, image: Image.Image) -> None:
        """Send the intermediate image of `step`."""


class ImageGenerationBackend(Protocol):
    """A device that has (or will have) one model loaded and turns requests into PIL images."""

    family: Family
    model_ref: str
    components: Components  # what was loaded: all, text-encoder (encode only) or denoiser (embeddings only)
    loras: LoraLibrary | None  # with --lora-dir, once loaded

    @property
    def loaded(self) -> bool:
        """True once `load` has finished."""

    @property
    def default_scheduler(self) -> str:
        """Class name of the model's own scheduler (for output metadata)."""

    @property
    def device(self) -> str:
        """The torch device string, e.g. "cpu" or "cuda:0"."""

    @property
    def dtype(self) -> str:
        """fp32, fp16 or bf16."""

    def load(self) -> None:
        """Load the model (blocking, seconds to minutes) and warm it up."""

    def count_steps(self, request: GenerationRequest) -> int:
        """How many denoising steps (progress events) the request will run."""

    def generate(self, request: GenerationRequest, hooks: StepHooks) -> list[Image.Image]:
        """Run one job on the device thread; one image per seed."""

    @property
    def embedding_spec(self) -> EmbeddingSpec:
        """The prompt_embeds tensors the denoiser accepts (after `load`; not on a text-encoder-only worker)."""

    def encode_prompt(self, prompt: str, negative_prompt: str | None, guidance: float) -> Tensors:
        """The prompt's embeddings by the model's own text encoders (negatives when `guidance` uses them)."""

    def generate_batch(
        self, requests: list[GenerationRequest], hooks: list[StepHooks], on_drop: Callable[[int, Exception], None]
    ) -> list[list[Image.Image] | None]:
        """Run compatible jobs (equal `engine.batching.batch_key`) as one call; job i reports to `hooks[i]`.

        A job whose hooks raise is dropped (`on_drop(i, exc)`, its slot None) while the others finish.
        """

    def memory(self) -> dict[str, int | None]:
        """Bytes allocated / reserved / total on the device (cheap: no walk over the weights)."""

    def info(self) -> dict[str, Any]:
        """Extra facts for /health (attention backend, memory)."""
