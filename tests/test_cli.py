"""The command line: instant --help, settings from env, `generate`, and serving a real process."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from tests.support import free_port
from worker import __version__


def test_help_version_and_a_mistyped_family_answer_without_importing_torch() -> None:
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom worker.cli import app\n"
        "runner = CliRunner()\n"
        "for args in (['--help'], ['generate', '--help'], ['--version'], ['--sd-version', 'sdxl'],"
        " ['generate', 'a cat', '--sd-version', 'sd15']):\n"
        "    result = runner.invoke(app, args)\n"
        "    print(repr((result.exit_code, result.output)))\n"
        "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    *answers, imported = result.stdout.strip().splitlines()
    (help_code, help_text), (generate_code, generate_help), version, sdxl, sd15 = map(eval, answers)
    assert imported == "[]"
    assert help_code == 0 and "--sd-version" in help_text and "generate" in help_text
    assert "With no command, `sd-worker` serves the model over HTTP" in " ".join(help_text.split())
    assert "serve" in help_text.split("Commands:")[1]
    assert "<bool>" not in help_text and "<bool>" not in generate_help and generate_code == 0
    assert version == (0, f"sd-worker {__version__}\n")
    assert sdxl[0] == 2 and "unknown sd-version 'sdxl' (did you mean 'xl'?); valid: demo, v1-5" in sdxl[1]
    assert sd15[0] == 2 and "(did you mean 'v1-5'?)" in sd15[1]


def test_a_busy_port_is_refused_before_the_model_loads_with_a_port_hint() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = (
            "import sys\nfrom typer.testing import CliRunner\nfrom worker.cli import app\n"
            f"result = CliRunner().invoke(app, ['serve', '--port', '{port}'])\n"
            "print(repr((result.exit_code, result.output, 'torch' in sys.modules)))\n"
        )
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    exit_code, output, torch_imported = eval(result.stdout)
    assert exit_code == 2 and not torch_imported
    assert f"port {port} on 127.0.0.1 is already in use" in output
    assert f"--port {port + 1}" in output


def test_options_before_a_command_are_refused_rather_than_dropped() -> None:
    from typer.testing import CliRunner

    from worker.cli import app

    result = CliRunner().invoke(app, ["--port", "9000", "serve"])
    assert result.exit_code == 2 and "put --port after the command: sd-worker serve" in result.output


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
    from typer.testing import CliRunner

    from worker.cli import app

    out = tmp_path / "cat.webp"  # in-process (a real process runs in the README test below)
    args = [
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
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (64, 48) and Image.open(out).format == "WEBP"
    assert Image.open(tmp_path / "cat-1.webp").size == (64, 48)
    progress = [line for line in result.output.splitlines() if "━" in line]
    # the tiny model keeps PNDM, whose PLMS warm-up takes one extra step: 3 steps are 4 UNet calls
    assert progress and progress[-1].startswith("done") and "4/4" in progress[-1], result.output
    assert f"wrote {out} (seed " in result.output and f"wrote {tmp_path / 'cat-1.webp'} (seed " in result.output


def test_generate_refuses_bad_values_before_loading_the_model(monkeypatch: Any, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from worker import cli as cli_module
    from worker import oneshot

    def never(settings: Any) -> None:
        raise AssertionError("the model was loaded for a job that cannot run")

    monkeypatch.setattr(oneshot, "create_backend", never)
    cases = {
        ("--sd-version", "v1-5", "--width", "63"): "width must be a multiple of 8 for the 'v1-5' family (got 63)",
        ("--steps", "0"): "steps must be between 1 and",
        ("--scheduler", "euler_ancestral"): "unknown scheduler 'euler_ancestral' is not valid for the 'demo' family",
        ("--width", "256"): "the demo model draws at 64×64 (max 128×128)",
        ("--num-samples", "99"): "num_samples must be between 1 and",
    }
    for args, message in cases.items():
        result = CliRunner().invoke(cli_module.app, ["generate", "a cat", "-o", str(tmp_path / "x.png"), *args])
        assert result.exit_code == 2, (args, result.output)
        assert message in " ".join(result.output.split()), (args, result.output)


def test_serve_a_real_process_then_stop_it_leaving_no_temp_files(tiny_model: Any, tmp_path: Path) -> None:
    port = free_port()
    command = [
        sys.executable,
        "-c",
        "from worker.cli import main; main()",
        "serve",
        "--sd-version",
        "v1-5",
        "--model-path",
        str(tiny_model("sd15")),
        "--port",
        str(port),
    ]
    temp = tmp_path / "temp"
    temp.mkdir()
    env = {**os.environ, "TMPDIR": str(temp)}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
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
        # a `url` response writes the image into the worker's private temp folder
        openai = {"prompt": "a cat", "size": "64x64", "response_format": "url", "num_inference_steps": 2}
        image_url = httpx.post(f"{url}/v1/images/generations", json=openai, timeout=60).json()["data"][0]["url"]
        assert httpx.get(image_url).status_code == 200
        assert [p.name for p in temp.glob("sd-worker-*/*.png")], "the image lives in the temp folder meanwhile"
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(30)
    assert code == 0
    assert list(temp.iterdir()) == [], "the worker removed its temp folder on the way out"


def test_batching_and_png_options_reach_the_settings(monkeypatch: Any) -> None:
    from typer.testing import CliRunner

    from worker import cli as cli_module
    from worker.config import Settings

    served: list[Settings] = []
    monkeypatch.setattr(cli_module, "_serve", lambda settings: served.append(settings) or 0)
    args = ["--max-batch", "3", "--batch-window-ms", "0", "--png-compression", "9"]
    for command in ([], ["serve"]):  # bare `sd-worker` and `sd-worker serve` are the same
        result = CliRunner().invoke(cli_module.app, [*command, *args])
        assert result.exit_code == 0, result.output
    assert [(s.max_batch, s.batch_window_ms, s.png_compression) for s in served] == [(3, 0.0, 9)] * 2
    refused = CliRunner().invoke(cli_module.app, ["--png-compression", "10"])
    assert refused.exit_code == 2 and "--png-compression" in refused.output


def test_readme_generate_prints_a_parsable_seed_line_without_a_terminal(tmp_path: Path) -> None:
    # the README's command as a user's shell runs it under CI: long path, no TTY, COLUMNS=80 (rich would wrap)
    out = tmp_path / ("a-folder-with-a-long-name-" * 5) / "out.png"
    out.parent.mkdir()
    sd_worker = Path(sys.executable).parent / "sd-worker"
    temp = tmp_path / "temp"
    temp.mkdir()
    env = {**os.environ, "COLUMNS": "80", "HF_HUB_OFFLINE": "1", "TMPDIR": str(temp)}
    command = [str(sd_worker), "generate", "a red circle on a blue background", "-o", str(out)]
    result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    wrote = [m for line in result.stderr.splitlines() if (m := re.fullmatch(r"wrote (.+) \(seed (\d+)\)", line))]
    assert [m.group(1) for m in wrote] == [str(out)], result.stderr
    image = Image.open(out)
    assert image.size == (64, 64)
    assert f"Seed: {wrote[0].group(2)}," in image.info["parameters"]
    progress = [line for line in result.stderr.splitlines() if "━" in line]
    assert progress and progress[-1].startswith("done") and "20/20" in progress[-1]
    for noise in ("[transformers]", "torchvision", "Loading weights", "Warning"):
        assert noise not in result.stderr, result.stderr
    assert list(temp.iterdir()) == [], "nothing left in the temp dir"


def test_async_webhook_and_model_name_options_reach_the_settings(monkeypatch: Any, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from worker import cli as cli_module
    from worker.config import Settings

    served: list[Settings] = []
    monkeypatch.setattr(cli_module, "_serve", lambda settings: served.append(settings) or 0)
    args = ["--state-dir", str(tmp_path), "--webhook-allow", "hooks.example.com", "--webhook-allow", "*.example.org",
            "--webhook-secret", "s", "--webhook-tries", "5", "--webhook-backoff", "0.5", "--webhook-timeout", "3",
            "--served-model-name", "house", "--served-model-name", "sd"]  # fmt: skip
    result = CliRunner().invoke(cli_module.app, args)
    assert result.exit_code == 0, result.output
    settings = served[0]
    assert settings.state_dir == tmp_path and settings.webhook_allow == ["hooks.example.com", "*.example.org"]
    assert (settings.webhook_secret, settings.webhook_tries, settings.webhook_backoff) == ("s", 5, 0.5)
    assert settings.webhook_timeout == 3.0 and settings.served_model_name == ["house", "sd"]
    refused = CliRunner().invoke(cli_module.app, ["--webhook-tries", "0"])
    assert refused.exit_code == 2 and "--webhook-tries" in refused.output
