"""The command line: instant --help, settings from env, `generate`, and serving a real process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from tests.support import cli, free_port


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom worker.cli import app\n"
        "result = CliRunner().invoke(app, ['--help'])\n"
        "assert result.exit_code == 0, result.output\n"
        "assert '--sd-version' in result.output and 'generate' in result.output\n"
        "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_settings_come_from_env() -> None:
    from worker.config import Settings

    env = {"SD_WORKER_PORT": "9123", "SD_WORKER_MAX_QUEUE": "3", "SD_WORKER_SD_VERSION": "xl"}
    code = "from worker.config import Settings; s = Settings(); print(s.port, s.max_queue, s.sd_version)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env}, timeout=60
    )
    assert result.stdout.split() == ["9123", "3", "xl"]
    assert Settings().port == 8081


def test_generate_writes_the_image_with_a_progress_bar(tiny_model: Any, tmp_path: Path) -> None:
    out = tmp_path / "cat.webp"
    result = cli(
        "generate",
        "a cat",
        "-o",
        str(out),
        "--sd-version",
        "v1-5",
        "--model-path",
        str(tiny_model("sd15")),
        "--steps",
        "3",
        "--width",
        "64",
        "--height",
        "48",
        "--num-samples",
        "2",
    )
    assert result.returncode == 0, result.stderr
    assert Image.open(out).size == (64, 48) and Image.open(out).format == "WEBP"
    assert Image.open(tmp_path / "cat-1.webp").size == (64, 48)
    assert "denoising" in result.stderr or "decoding" in result.stderr or "4/4" in result.stderr


def test_generate_rejects_bad_values_clearly(tiny_model: Any, tmp_path: Path) -> None:
    result = cli(
        "generate",
        "a cat",
        "-o",
        str(tmp_path / "x.png"),
        "--sd-version",
        "v1-5",
        "--model-path",
        str(tiny_model("sd15")),
        "--width",
        "63",
    )
    assert result.returncode == 2
    assert "width must be a multiple of 8" in result.stderr


def test_serve_a_real_process_then_stop_it(tiny_model: Any) -> None:
    port = free_port()
    command = [
        sys.executable,
        "-c",
        "from worker.cli import main; main()",
        "--sd-version",
        "v1-5",
        "--model-path",
        str(tiny_model("sd15")),
        "--port",
        str(port),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{url}/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            assert time.monotonic() < deadline
            time.sleep(0.2)
        health = httpx.get(f"{url}/health").json()
        assert health["worker_id"].endswith(f"-{port}") and health["status"] == "healthy"
        body = {"prompt": "a cat", "steps": 2, "width": 64, "height": 64}
        with httpx.stream("POST", f"{url}/execute", json=body, timeout=60) as response:
            lines = [line for line in response.iter_lines() if line.startswith("data: ")]
        complete = json.loads(lines[-1][6:])
        assert complete["width"] == 64
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(30)
    assert code == 0


def test_batching_and_png_options_reach_the_settings(monkeypatch: Any) -> None:
    from typer.testing import CliRunner

    from worker import cli as cli_module
    from worker.config import Settings

    served: list[Settings] = []
    monkeypatch.setattr(cli_module, "_serve", lambda settings: served.append(settings) or 0)
    args = ["--max-batch", "3", "--batch-window-ms", "0", "--png-compression", "9"]
    result = CliRunner().invoke(cli_module.app, args)
    assert result.exit_code == 0, result.output
    assert (served[0].max_batch, served[0].batch_window_ms, served[0].png_compression) == (3, 0.0, 9)
    refused = CliRunner().invoke(cli_module.app, ["--png-compression", "10"])
    assert refused.exit_code == 2 and "--png-compression" in refused.output
