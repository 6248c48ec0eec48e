"""The engine's contract, torch-free: neutral params in, a resolved request out, the hooks a running job reports
through, and the `ImageGenerationBackend` a device implements (as vLLM's `EngineClient`).

Every protocol adapter (native, OpenAI, the CLI one-shot, …) turns its body into `GenerationParams`;
`worker.engine.resolve.resolve` turns those into a `GenerationRequest`; a backend turns that into PIL images.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from PIL import Image

from worker.config import Components

if TYPE_CHECKING:
    from worker.pipelines.families import Family
    from worker.pipelines.lora import LoraLibrary

Task = Literal["txt2img", "img2img", "inpaint"]
OutputFormat = Literal["png", "jpeg", "webp"]
Tensors = Mapping[str, Any]  # prompt-embedding tensors by keyword name (torch tensors, opaque here)


@dataclass(frozen=True)
class LoraRequest:
    """A LoRA as a client names it: a file name from `--lora-dir` and its strength."""

    name: str
    weight: float = 1.0


@dataclass(frozen=True)
class LoraUse:
    """A LoRA as a job carries it: the file found for the name, at a weight."""

    name: str
    path: str
    weight: float
    version: int  # the file's mtime in ns: a replaced file is loaded again


@dataclass(frozen=True)
class GenerationParams:
    """What a client asked for, in no protocol's words. None = the loaded family's default.

    Images are the uploaded file bytes (PNG/JPEG/WebP), decoded and checked by the resolver.
    """

    task: Task = "txt2img"
    prompt: str | None = None
    negative_prompt: str | None = None
    steps: int | None = None
    guidance_scale: float | None = None
    seed: int | None = None  # None or -1: random
    width: int | None = None
    height: int | None = None
    num_samples: int = 1
    scheduler: str | None = None
    output_format: OutputFormat = "png"
    output_compression: int | None = None  # 0-100; None = the format's default
    strength: float | None = None  # img2img / inpaint; None = the task's default
    image: bytes | None = field(default=None, repr=False)
    mask: bytes | None = field(default=None, repr=False)
    mask_alpha: bool = False  # the mask's convention: False = white repaints; True = transparent repaints (OpenAI)
    mask_blur: int = 0
    loras: tuple[LoraRequest, ...] = ()
    preview_every: int = 0  # a preview every N steps
    previews: int = 0  # previews evenly spread over the denoising steps (OpenAI partial images)
    prompt_embeds: Mapping[str, Any] | None = field(default=None, repr=False)  # an embedding envelope
    prompt_syntax: bool = False  # read A1111 emphasis, long prompts and [from:to:when] (see pipelines.syntax)
    clip_skip: int = 0  # CLIP layers skipped from the end (diffusers' clip_skip; A1111's CLIP skip − 1)


@dataclass(frozen=True)
class GenerationRequest:
    """One job's parameters, fully resolved (family defaults applied, inputs decoded); `seeds[i]` drives image i."""

    task: Task
    prompt: str | None  # None when the job brings `embeddings` instead
    negative_prompt: str | None
    steps: int
    guidance_scale: float
    seeds: tuple[int, ...]
    width: int
    height: int
    scheduler: str | None
    output_format: OutputFormat
    strength: float | None = None
    image: Image.Image | None = field(default=None, repr=False)
    mask: Image.Image | None = field(default=None, repr=False)  # white = repaint, already blurred by `mask_blur`
    output_compression: int | None = None
    loras: tuple[LoraUse, ...] = ()
    previews: int = 0
    preview_every: int = 0
    echo: dict[str, Any] = field(default_factory=dict, repr=False)  # the request as sent, for metadata
    embeddings: Tensors | None = field(default=None, repr=False)  # checked prompt_embeds tensors, by name
    prompt_syntax: bool = False
    clip_skip: int = 0

    @property
    def num_samples(self) -> int:
        """How many images the job makes."""
        return len(self.seeds)


class StepHooks(Protocol):
    """How a running pipeline reports to its job; `step` and `check` raise to stop the job."""

    def stage(self, name: str) -> None:
        """Enter a stage: encoding_prompt, denoising, decoding."""

    def step(self, step: int) -> None:
        """Denoising step `step` (1-based) finished. Raises JobCancelled / JobTimeout to stop."""

    def check(self) -> None:
        """Raise if the job should stop now."""

    def wants_preview(self, step: int) -> int:
        """How many of the job's images (the first N) to preview after `step`; 0 = none."""

    def preview(self, step: int, images: list[Image.Image]) -> None:
        """Send the intermediate images of `step` (the first `wants_preview(step)` of the job)."""


OnDrop = Callable[[int, Exception], None]


@dataclass(frozen=True)
class Member:
    """A job inside a step-level batch: its request, its hooks, and where its images or its failure go."""

    request: GenerationRequest
    hooks: StepHooks
    done: Callable[[list[Image.Image]], None]
    dropped: Callable[[Exception], None]


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
    def min_side(self) -> int:
        """Smallest width or height (pixels) the loaded denoiser can run: its latent must survive every downsampling."""

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

    def generate(
        self, requests: list[GenerationRequest], hooks: list[StepHooks], on_drop: OnDrop
    ) -> list[list[Image.Image] | None]:
        """Run one job, or compatible jobs (equal `engine.batching.batch_key`) as one call; job i reports to
        `hooks[i]`. A job whose hooks raise is dropped (`on_drop(i, exc)`, its slot None) while the others finish.
        """

    def steps_continuously(self, request: GenerationRequest) -> bool:
        """True if `request` can join and leave a running batch between denoising steps (`generate_stepwise`)."""

    def generate_stepwise(self, first: Member, admit: Callable[[], list[Member]]) -> None:
        """Denoise `first` and the jobs `admit` returns before each step, one denoiser call per step, until none
        is left; each job ends through its `done` or `dropped`."""

    def embeddings(self, envelope: Mapping[str, Any], guidance: float, max_bytes: int) -> Tensors:
        """The checked tensors of an embedding envelope (InvalidRequest naming what is wrong)."""

    def encode_prompt(
        self, prompt: str, negative_prompt: str | None, guidance: float, dtype: str | None
    ) -> dict[str, Any]:
        """The embedding envelope of a prompt by the model's own text encoders (in `dtype`, default theirs)."""

    def memory(self) -> dict[str, int | None]:
        """Bytes allocated / reserved / total on the device (cheap: no walk over the weights)."""

    def info(self) -> dict[str, Any]:
        """Extra facts for /health (attention backend, memory)."""
