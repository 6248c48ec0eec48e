"""The playground page at `/`, driven in real headless Chromium against a real worker serving the demo model.

Debian's `chromium` (installed by .ci/run) is driven by Playwright for Python through `executable_path`; Playwright's
own browser download is never used. Each test saves a screenshot into its pytest tmp dir.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import make_tiny_models
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, Locator, Page, Request, sync_playwright

from tests.support import b64_png, init_image, live_server, pixels, serve_app
from worker.api.app import create_app
from worker.backends.cpu import CpuBackend
from worker.config import Settings
from worker.pipelines.families import DEMO_MODEL_DIR

CHROMIUM = Path(os.environ.get("SD_WORKER_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
KEY = "s3cret-playground-key"
JSON = {"Accept": "application/json"}

# .ci/run sets SD_WORKER_REQUIRE_BROWSER=1 so that CI fails rather than skips when chromium is missing.
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() and not os.environ.get("SD_WORKER_REQUIRE_BROWSER"),
    reason=f"no Chromium at {CHROMIUM} (apt-get install chromium, or set SD_WORKER_CHROMIUM)",
)


@pytest.fixture(scope="module")
def demo_backend(tmp_path_factory: pytest.TempPathFactory) -> CpuBackend:
    """The bundled demo model, with one LoRA made for it in --lora-dir."""
    lora_dir = tmp_path_factory.mktemp("playground-loras")
    make_tiny_models.make_lora(DEMO_MODEL_DIR, lora_dir / "ink.safetensors", seed=1)
    backend = CpuBackend(Settings(lora_dir=lora_dir))
    backend.load()
    return backend


@pytest.fixture(scope="module")
def worker_url(demo_backend: CpuBackend) -> Iterator[str]:
    # window batching, so a second job waits in line (continuous batching would take it into the running batch)
    settings = Settings(lora_dir=demo_backend.settings.lora_dir, batching="window")
    with live_server(settings, demo_backend) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Page]:
    """A fresh browser context (empty storage); fails the test on any JavaScript exception; screenshots at the end."""
    context = browser.new_context(viewport={"width": 1000, "height": 760})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    page.screenshot(path=str(tmp_path / f"{request.node.name}.png"), full_page=True)
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def open_page(page: Page, url: str) -> None:
    page.goto(f"{url}/")
    page.wait_for_function("document.querySelector('#model').textContent.startsWith('demo')")


def record_progress(page: Page) -> None:
    """Remember every value the progress bars take (from each change's old value: records come in batches),
    and how many previews were shown."""
    page.evaluate("""() => {
        window.progressSeen = []; window.previewsSeen = 0;
        new MutationObserver((records) => { for (const r of records) {
            if (r.target.tagName === 'PROGRESS' && r.attributeName === 'value') window.progressSeen.push(+r.oldValue);
            if (r.target.classList?.contains('preview') && r.attributeName === 'src') window.previewsSeen++;
        }}).observe(document.getElementById('jobs'), {subtree: true, attributes: true, attributeOldValue: true});
    }""")


def wait_ready(url: str, headers: dict[str, str]) -> None:
    deadline = time.monotonic() + 30
    while httpx.get(f"{url}/ready", headers=headers).status_code != 200:
        assert time.monotonic() < deadline, "the worker never became ready"
        time.sleep(0.05)


def download(page: Page, locator: Locator) -> bytes:
    with page.expect_download() as info:
        locator.click()
    return Path(info.value.path()).read_bytes()


def test_generate_shows_progress_previews_and_the_image_with_its_seed_and_reproduces_it(
    page: Page, worker_url: str, tmp_path: Path
) -> None:
    open_page(page, worker_url)
    assert page.input_value("#width") == "64" and page.input_value("#height") == "64", "native size preselected"
    record_progress(page)
    page.fill("#prompt", "a red circle on a blue background")
    page.fill("#steps", "16")
    page.uncheck("#random-seed")
    page.fill("#seed", "7")
    page.click("#generate")
    page.wait_for_function("document.querySelector('.job progress').value >= 5")
    page.screenshot(path=str(tmp_path / "mid-generation.png"))
    status = page.locator(".job-status").text_content()
    assert re.fullmatch(r"step \d+ of 16 · ETA \d+\.\d s|step 16 of 16.*|done in .*", status), status
    page.wait_for_selector(".job[data-status=completed]")

    seen = page.evaluate("window.progressSeen")  # 0 before step 1; the completed bar is set to 16 once more
    assert seen == [*range(16), 16], "one bar update per denoising step"
    assert page.evaluate("window.previewsSeen") >= 1
    result = page.locator(".result").first
    assert result.locator(".seed").text_content() == "7"
    infotext = result.locator(".infotext").text_content()
    assert infotext.startswith("a red circle on a blue background\n") and "Steps: 16" in infotext
    assert "Seed: 7" in infotext and "Size: 64x64" in infotext
    first = download(page, result.locator(".download"))
    assert Image.open(io.BytesIO(first)).size == (64, 64)

    page.check("#random-seed")
    result.locator(".reuse-seed").click()
    assert page.input_value("#seed") == "7" and not page.is_checked("#random-seed")
    page.fill("#prompt", "something else")
    page.check("#random-seed")
    result.locator(".reproduce").click()
    assert page.input_value("#prompt") == "a red circle on a blue background"
    assert page.input_value("#seed") == "7" and not page.is_checked("#random-seed")
    page.click("#generate")
    page.wait_for_selector(".job[data-status=completed] >> nth=1")
    again = download(page, page.locator(".result").first.locator(".download"))
    assert again == first, "reproduce: same request, same seed → the same bytes"
    assert page.locator("#history li").count() == 2

    page.locator(".result").first.locator(".to-img2img").click()  # send the result back in
    assert page.is_checked("input[name=task][value=img2img]") and page.locator("#canvas-wrap").is_visible()
    page.fill("#steps", "5")
    with page.expect_request(lambda request: request.url.endswith("/img2img")) as sent:
        page.click("#generate")
    body = json.loads(sent.value.post_data)
    assert base64.b64decode(body["image"].split(",", 1)[1]) == first and body["strength"] == 0.8
    page.wait_for_selector(".job[data-status=completed] >> nth=2")


def test_cancel_marks_that_job_cancelled_and_the_next_one_runs(page: Page, worker_url: str) -> None:
    open_page(page, worker_url)
    page.uncheck("#previews")
    page.fill("#prompt", "a green square on a white background")
    page.fill("#steps", "50")
    page.click("#generate")
    page.wait_for_function("document.querySelector('.job progress').value >= 2")
    job_id = page.locator(".job").first.get_attribute("data-job-id")
    long_job = page.locator(f".job[data-job-id='{job_id}']")
    page.fill("#steps", "4")
    page.click("#generate")  # queued behind the long one
    short_job = page.locator(f".job:not([data-job-id='{job_id}'])")
    short_job.locator(".job-status:text-is('queued: next in line')").wait_for()

    long_job.locator(".cancel").click()
    page.wait_for_selector(f".job[data-job-id='{job_id}'][data-status=cancelled]")
    assert long_job.locator(".job-status").text_content().startswith("cancelled: ")
    page.wait_for_selector(f".job:not([data-job-id='{job_id}'])[data-status=completed]")

    status = httpx.get(f"{worker_url}/v1/jobs/{job_id}").json()
    assert status["status"] == "cancelled" and status["progress"]["step"] < 50


def test_inpaint_with_a_painted_mask_keeps_every_pixel_outside_it(page: Page, worker_url: str, tmp_path: Path) -> None:
    chosen = tmp_path / "chosen.png"
    init_image(64).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(chosen)
    open_page(page, worker_url)
    page.check("input[name=task][value=inpaint]")
    page.set_input_files("#image-file", str(chosen))
    page.locator("#canvas-wrap").wait_for()
    # then another image is dropped onto the page, replacing the chosen one
    source_b64 = b64_png(init_image(64))
    dropped = page.evaluate_handle(
        """(b64) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], "source.png", {type: "image/png"}));
            return transfer;
        }""",
        source_b64,
    )
    page.dispatch_event("#drop", "drop", {"dataTransfer": dropped})
    page.wait_for_function("(b64) => document.querySelector('#source-image').src.endsWith(b64)", arg=source_b64)
    canvas = page.locator("#mask-overlay")

    def stroke(x0: float, x1: float, y: float) -> None:  # in fractions of the image's width and height
        canvas.scroll_into_view_if_needed()
        box = canvas.bounding_box()  # where it is now: clicking a button may have scrolled the page
        assert box is not None
        page.mouse.move(box["x"] + box["width"] * x0, box["y"] + box["height"] * y)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * x1, box["y"] + box["height"] * y, steps=8)
        page.mouse.up()

    stroke(0.25, 0.75, 0.1)
    page.click("#clear-mask")  # gone again
    stroke(0.25, 0.75, 0.5)  # the middle, a quarter of the width in from each side (brush: 8 px)
    page.check("#erase")
    stroke(0.7, 0.7, 0.5)  # a dot erased near its right end
    page.fill("#prompt", "a yellow circle on a black background")
    page.fill("#steps", "8")
    with page.expect_request(lambda request: request.url.endswith("/inpaint")) as sent:
        page.click("#generate")
    body = json.loads(sent.value.post_data)
    page.wait_for_selector(".job[data-status=completed]")
    out = pixels(Image.open(io.BytesIO(download(page, page.locator(".result .download")))))

    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["mask"].split(",", 1)[1]))).convert("L"))
    assert mask.shape == (64, 64) and body["width"] == body["height"] == 64
    assert body["image"].split(",", 1)[1] == source_b64, "the dropped image, not the chosen one"
    assert mask[32, 32] == 255 and mask[32, 20] == 255 and mask[0, 0] == 0 and mask[32, 4] == 0, "the stroke"
    assert mask[6, 32] == 0 and mask[32, 45] == 0, "the cleared stroke and the erased dot are not in the mask"
    keep = mask == 0
    assert keep.sum() > 2000 and (mask == 255).sum() > 100
    assert np.array_equal(out[keep], pixels(init_image(64))[keep]), "pixels outside the mask come back unchanged"
    assert not np.array_equal(out[mask == 255], pixels(init_image(64))[mask == 255]), "the masked area is repainted"


def test_an_invalid_size_shows_the_servers_message_next_to_the_field(page: Page, worker_url: str) -> None:
    open_page(page, worker_url)
    page.fill("#prompt", "a blue triangle on a yellow background")
    page.fill("#width", "100")
    page.click("#generate")
    shown = page.locator(".field[data-field=width] .field-error")
    shown.wait_for()
    server = httpx.post(f"{worker_url}/execute", json={"prompt": "x", "width": 100}, headers=JSON)
    assert server.status_code == 422
    assert shown.text_content() == server.json()["error"]["message"]
    assert page.locator(".job").count() == 0, "a refused request leaves no job behind"

    page.fill("#width", "512")
    page.click("#generate")
    assert shown.text_content() == "the demo model draws at 64×64 (max 128×128)"  # from /v1/capabilities:
    assert httpx.get(f"{worker_url}/v1/capabilities").json()["size"]["max"] == {"width": 128, "height": 128}

    page.fill("#width", "64")
    assert shown.count() == 0, "editing the field clears its error"
    page.fill("#steps", "3")
    page.press("#prompt", "Control+Enter")  # the keyboard shortcut generates too
    page.wait_for_selector(".job[data-status=completed]")


def test_a_worker_with_an_api_key_asks_once_and_keeps_the_key_on_a_phone(
    browser: Browser, demo_backend: CpuBackend, tmp_path: Path
) -> None:
    settings = Settings(api_key=KEY, lora_dir=demo_backend.settings.lora_dir)
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    sent: list[Request] = []
    page.on("request", lambda request: sent.append(request))
    try:
        with serve_app(create_app(settings, backend=demo_backend)) as url:
            wait_ready(url, {"Authorization": f"Bearer {KEY}"})
            page.goto(f"{url}/")
            dialog = page.locator("#key-dialog")
            dialog.wait_for()
            page.fill("#key-input", "wrong")
            page.click("#key-save")
            page.wait_for_function("document.querySelector('#key-reason').textContent.includes('refused')")
            page.fill("#key-input", KEY)
            page.click("#key-save")
            page.wait_for_function("document.querySelector('#model').textContent.startsWith('demo')")
            assert page.evaluate("document.documentElement.scrollWidth") <= 390, "fits a phone's width"

            page.locator("#lora-box summary").click()
            page.check(".lora[data-name=ink] input[type=checkbox]")
            page.fill(".lora[data-name=ink] input[type=number]", "0.7")
            page.fill("#prompt", "a white square on a red background")
            page.fill("#steps", "4")
            page.fill("#num_samples", "2")
            page.click("#generate")
            page.wait_for_selector(".job[data-status=completed]")
            first, second = (int(seed) for seed in page.locator(".result .seed").all_text_contents())
            assert second == (first + 1) % 2**32, "image i has seed + i"

            page.reload()  # the key is kept: no second question
            page.wait_for_function("document.querySelector('#model').textContent.startsWith('demo')")
            assert not dialog.is_visible()
            page.screenshot(path=str(tmp_path / "api-key-phone.png"), full_page=True)
    finally:
        context.close()
    generation = next(r for r in sent if r.url.endswith("/execute"))
    assert json.loads(generation.post_data)["loras"] == [{"name": "ink", "weight": 0.7}]
    assert generation.headers["authorization"] == f"Bearer {KEY}"
    assert not [r.url for r in sent if KEY in r.url], "the key never appears in a URL"
