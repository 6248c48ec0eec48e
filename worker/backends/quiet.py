"""Keep a normal start quiet: third-party notices that ask nothing of the user are dropped before they print."""

from __future__ import annotations

import logging

# transformers warns once per image-processor class when torchvision is missing, although the pipelines here
# never use those processors (they only ever see the PIL fallback), so the notice asks nothing of the user.
TORCHVISION_NOTICE = "requires torchvision (not installed); falling back to"
TRANSFORMERS_IMPORTS = "transformers.utils.import_utils"


class _DropTorchvisionNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return TORCHVISION_NOTICE not in record.getMessage()


def quiet_third_party() -> None:
    """Drop transformers' torchvision notices and its per-model "Loading weights" bars (call before the import)."""
    logger = logging.getLogger(TRANSFORMERS_IMPORTS)
    if not any(isinstance(existing, _DropTorchvisionNotice) for existing in logger.filters):
        logger.addFilter(_DropTorchvisionNotice())
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
