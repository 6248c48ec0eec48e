"""A small synchronous client for sd-worker, including split serving: encode on one worker, denoise on another.

    from worker.client import WorkerClient, generate_split

    with WorkerClient("http://gpu-big:8081") as encoder, WorkerClient("http://gpu-small:8081") as denoiser:
        result = generate_split(encoder, denoiser, "a red circle", seed=1, steps=20)
        open("out.png", "wb").write(result.image_bytes(0))

Imports httpx only (no torch): it runs on machines that hold no model.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self

import httpx

Task = Literal["txt2img", "img2img", "inpaint"]
ROUTES: dict[Task, str] = {"txt2img": "/execute", "img2img": "/img2img", "inpaint": "/inpaint"}


class WorkerRequestError(Exception):
    """A worker answered with an error: its HTTP status and the `error` object (code, message, field)."""

    def __init__(self, status: int, error: dict[str, Any]) -> None:
        self.status = status
        self.code = str(error.get("code", "unknown"))
        self.field = error.get("field")
        self.message = str(error.get("message", ""))
        where = f" ({self.field})" if self.field else ""
        super().__init__(f"{status} {self.code}{where}: {self.message}")


@dataclass(frozen=True)
class Generation:
    """The `complete` payload of one job."""

    payload: dict[str, Any]

    @property
    def seeds(self) -> list[int]:
        """The seed of each image."""
        return list(self.payload["seeds"])

    def image_bytes(self, index: int = 0) -> bytes:
        """The encoded image (PNG/JPEG/WebP) number `index`."""
        return base64.b64decode(self.payload["images"][index])


class WorkerClient:
    """One worker's HTTP API (JSON mode: each call waits for the job's end)."""

    def __init__(self, url: str, *, api_key: str | None = None, timeout: float = 600.0) -> None:
        headers = {"Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def health(self) -> dict[str, Any]:
        """GET /health (includes `capabilities`)."""
        return self._call("GET", "/health")

    def encode(
        self,
        prompt: str,
        negative_prompt: str | None = None,
        *,
        guidance_scale: float | None = None,
        dtype: Literal["f32", "f16", "bf16"] | None = None,
    ) -> dict[str, Any]:
        """POST /encode: the prompt's embedding envelope. Pass the guidance_scale the denoiser will use, so the
        negative embeddings come along when it needs them (default: the family's)."""
        body = {"prompt": prompt, "negative_prompt": negative_prompt, "guidance_scale": guidance_scale, "dtype": dtype}
        return self._call("POST", "/encode", _without_none(body))

    def generate(self, task: Task = "txt2img", **params: Any) -> Generation:
        """POST /execute (or /img2img, /inpaint) with the native API's fields; waits for the images."""
        return Generation(self._call("POST", ROUTES[task], _without_none(params)))

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self._http.request(method, path, json=body)
        try:
            data: dict[str, Any] = response.json()
        except ValueError:
            data = {"error": {"code": "bad_response", "message": response.text[:200]}}
        if response.status_code >= 400:
            raise WorkerRequestError(response.status_code, data.get("error", {}))
        return data


def generate_split(
    encoder: WorkerClient,
    denoiser: WorkerClient,
    prompt: str,
    negative_prompt: str | None = None,
    *,
    task: Task = "txt2img",
    dtype: Literal["f32", "f16", "bf16"] | None = None,
    **params: Any,
) -> Generation:
    """Encode the prompt on `encoder` (a text-encoder worker), then generate on `denoiser` with the envelope."""
    envelope = encoder.encode(prompt, negative_prompt, guidance_scale=params.get("guidance_scale"), dtype=dtype)
    return denoiser.generate(task, prompt_embeds=envelope, **params)


def _without_none(body: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in body.items() if value is not None}
