"""A1111 request bodies (`modules/api/models.py` + `modules/processing.py` field names and defaults).

Unknown fields are ignored, as A1111's generated models ignore them (SillyTavern sends its own `url` and `auth`
keys along). Every A1111 field may be null. Fields this worker cannot honour are declared so that `serving`
can refuse them by name when they ask for something; at their A1111 default they pass. Omitted `steps`,
`cfg_scale`, `width`, `height` take the loaded model's defaults rather than A1111's 50 steps, CFG 7 and 512².
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class A1111Request(BaseModel):
    """Fields shared by `txt2img` and `img2img` (A1111's `StableDiffusionProcessing`)."""

    model_config = ConfigDict(extra="ignore")

    prompt: str | None = ""
    negative_prompt: str | None = ""
    styles: list[str] | None = None
    seed: int | None = Field(-1, ge=-1, lt=2**32)
    subseed: int | None = -1
    subseed_strength: float | None = 0
    seed_resize_from_h: int | None = -1
    seed_resize_from_w: int | None = -1
    sampler_name: str | None = None
    scheduler: str | None = None
    sampler_index: str | None = Field(None, description="deprecated spelling of sampler_name")
    batch_size: int | None = Field(1, ge=1)
    n_iter: int | None = Field(1, ge=1, le=100)
    steps: int | None = Field(None, ge=1)
    cfg_scale: float | None = Field(None, ge=0, le=100, allow_inf_nan=False)
    width: int | None = Field(None, ge=8)
    height: int | None = Field(None, ge=8)
    restore_faces: bool | None = None
    tiling: bool | None = None
    do_not_save_samples: bool | None = False
    do_not_save_grid: bool | None = False
    eta: float | None = None
    s_min_uncond: float | None = None
    s_churn: float | None = None
    s_tmax: float | None = None
    s_tmin: float | None = None
    s_noise: float | None = None
    override_settings: dict[str, Any] | None = None
    override_settings_restore_afterwards: bool | None = True
    refiner_checkpoint: str | None = None
    refiner_switch_at: float | None = None
    disable_extra_networks: bool | None = False
    comments: dict[str, Any] | None = None
    script_name: str | None = None
    script_args: list[Any] | None = None
    send_images: bool | None = True
    save_images: bool | None = False
    alwayson_scripts: dict[str, Any] | None = None
    force_task_id: str | None = None
    infotext: str | None = None


class Txt2ImgRequest(A1111Request):
    """`POST /sdapi/v1/txt2img` (the hires-fix fields are ignored unless `enable_hr`, as in A1111)."""

    enable_hr: bool | None = False
    denoising_strength: float | None = None
    firstphase_width: int | None = 0
    firstphase_height: int | None = 0
    hr_scale: float | None = 2.0
    hr_upscaler: str | None = None
    hr_second_pass_steps: int | None = 0
    hr_resize_x: int | None = 0
    hr_resize_y: int | None = 0
    hr_checkpoint_name: str | None = None
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str | None = ""
    hr_negative_prompt: str | None = ""


class Img2ImgRequest(A1111Request):
    """`POST /sdapi/v1/img2img`: one init image; with `mask`, inpainting (white = repaint)."""

    init_images: list[str] | None = None
    resize_mode: int | None = 0
    denoising_strength: float | None = Field(0.75, ge=0, le=1, allow_inf_nan=False)
    image_cfg_scale: float | None = None
    mask: str | None = None
    mask_blur_x: int | None = Field(4, ge=0, le=256)
    mask_blur_y: int | None = Field(4, ge=0, le=256)
    mask_blur: int | None = Field(None, ge=0, le=256)
    mask_round: bool | None = True
    inpainting_fill: int | None = 0
    inpaint_full_res: bool | None = True
    inpaint_full_res_padding: int | None = 0
    inpainting_mask_invert: int | None = 0
    initial_noise_multiplier: float | None = None
    latent_mask: str | None = None
    include_init_images: bool | None = False


class PngInfoRequest(BaseModel):
    """`POST /sdapi/v1/png-info`."""

    image: str = Field(min_length=1)


class GenerationResponse(BaseModel):
    """What `txt2img` and `img2img` answer: base64 images, the request, and `info` as a JSON string."""

    images: list[str]
    parameters: dict[str, Any]
    info: str
