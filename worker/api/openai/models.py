"""The names the loaded model answers to on the OpenAI API, and `/v1/models` built from them."""

from __future__ import annotations

from typing import Any

from worker.errors import ModelNotFound

# what clients written for OpenAI send by default (Open WebUI, LangChain, LibreChat, litellm, the SDK examples)
OPENAI_NAMES = ("dall-e-2", "dall-e-3", "gpt-image-1", "gpt-image-1-mini")


class ServedModels:
    """The family name, the model reference, the OpenAI names and every `--served-model-name`: one model."""

    def __init__(self, family: str, model_ref: str, served_names: list[str], created: int) -> None:
        self.names = list(dict.fromkeys([family, model_ref, *OPENAI_NAMES, *served_names]))
        self.root = model_ref
        self.created = created

    def check(self, model: str | None) -> None:
        """Refuse (404 listing the served names) a model this worker does not serve; None = the default."""
        if model is not None and model not in self.names:
            raise ModelNotFound(
                f"the model {model!r} is not served here; this worker answers to {', '.join(self.names)}",
                field="model",
            )

    def listing(self) -> dict[str, Any]:
        """`GET /v1/models`."""
        return {"object": "list", "data": [self._card(name) for name in self.names]}

    def card(self, model: str) -> dict[str, Any]:
        """`GET /v1/models/{model}`."""
        self.check(model)
        return self._card(model)

    def _card(self, name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": self.created, "owned_by": "sd-worker", "root": self.root}


def default_response_format(model: str | None) -> str:
    """OpenAI's default: `url` for the DALL·E models, `b64_json` for the GPT image models (and ours)."""
    return "url" if model is not None and model.startswith("dall-e-") else "b64_json"
