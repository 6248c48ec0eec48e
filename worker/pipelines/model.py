"""A loaded model: the base pipeline plus its img2img and inpaint variants sharing the same weights."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

from worker.engine.protocol import Task
from worker.pipelines.families import Family
from worker.pipelines.lora import AdapterState
from worker.pipelines.preview import LatentProjection, fit_projection
from worker.pipelines.prompts import EmbeddingSpec, spec_of


@dataclass
class LoadedModel:
    """One family's pipelines on one device; `variants[task]` shares every module with `base`."""

    family: Family
    ref: str
    base: Any
    variants: dict[Task, Any]
    default_scheduler: Any
    embeddings: EmbeddingSpec  # the prompt_embeds the denoiser takes
    adapters: AdapterState = field(default_factory=AdapterState)
    preview_decoder: str = "linear"
    _projection: LatentProjection | None = None

    def preview(self, latents: Any, decode: Any) -> Any:
        """PIL pictures of intermediate latents, one per image: the fitted projection (fitted on first use) or
        `decode`."""
        if self.preview_decoder == "vae":
            return decode(self, latents)
        if self._projection is None:
            self._projection = fit_projection(self.base)
        return self._projection.render(latents)

    @classmethod
    def from_base(cls, family: Family, ref: str, base: Any) -> LoadedModel:
        """Derive img2img/inpaint with `from_pipe` (no second copy of the weights)."""
        variants: dict[Task, Any] = {
            "txt2img": base,
            "img2img": AutoPipelineForImage2Image.from_pipe(base),
            "inpaint": AutoPipelineForInpainting.from_pipe(base),
        }
        return cls(family, ref, base, variants, base.scheduler, spec_of(base))

    @property
    def has_text_encoder(self) -> bool:
        """False on a `--components denoiser` worker: requests must bring prompt embeddings."""
        return getattr(self.base, "text_encoder", None) is not None

    @property
    def denoiser(self) -> Any:
        """The UNet or the transformer: the module called once per denoising step."""
        return getattr(self.base, "unet", None) or self.base.transformer
