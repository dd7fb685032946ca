"""End to end in a real headless Chromium: open the page, click an object, finish it, export COCO."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time

import pytest

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")


def find_chromium() -> str | None:
    for path in CHROMIUM_CANDIDATES:
        if shutil.which(path):
            return path
    return shutil.which("chromium") or shutil.which("chromium-browser")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(project):
    uvicorn = pytest.importorskip("uvicorn")
    from robustvision.app.annotate.server import create_app

    port = free_port()
    config = uvicorn.Config(create_app(project), host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    yield project, f"http://127.0.0.1:{port}/"
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.mark.integration
def test_click_finish_export_in_chromium(server, artifacts_dir):
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no Chromium found (install Debian's `chromium`); the browser test needs a real browser")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (Python) is not installed")
    project, url = server
    console_errors: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 760})
            page.on("console", lambda msg: console_errors.append(msg.text) if msg.type == "error" else None)
            page.on("pageerror", lambda err: console_errors.append(str(err)))
            page.goto(url)
            page.wait_for_selector("body[data-ready='1']", timeout=15000)
            assert page.locator("#images li").count() == 3
            assert page.locator("#images li .badge.error").count() == 1  # the corrupt image has an error badge
            page.locator("#images li[data-name='disc.png']").click()
            page.wait_for_function("window.rvState.image === 'disc.png' && window.rvState.maskVersion >= 1")
            # click the centre of the disc (image pixel 64, 48) through the canvas transform
            box = page.locator("#canvas").bounding_box()
            view = page.evaluate("window.rvState.view")
            x = box["x"] + view["ox"] + 64.5 * view["scale"]
            y = box["y"] + view["oy"] + 48.5 * view["scale"]
            before = page.evaluate("window.rvState.maskVersion")
            page.mouse.click(x, y)
            page.wait_for_function(f"window.rvState.maskVersion > {before} && window.rvState.maskEl !== null")
            page.wait_for_function("document.querySelector('#status').textContent.startsWith('mask updated')")
            page.screenshot(path=str(artifacts_dir / "annotate_mask.png"))
            page.keyboard.press("Space")
            page.wait_for_function("window.rvState.objects.length === 1")
            page.locator("button[data-export='coco']").click()
            page.wait_for_function("document.querySelector('#export-result').textContent.includes('coco.json')")
            page.keyboard.press("e")
            page.mouse.click(x, y)  # select the object in edit mode to show its vertices
            page.screenshot(path=str(artifacts_dir / "annotate_tool.png"))
        finally:
            browser.close()
    assert not console_errors, console_errors
    coco = json.loads((project.annotations_dir / "export" / "coco.json").read_text())
    assert len(coco["annotations"]) == 1 and coco["annotations"][0]["category_id"] == 1
    x0, y0, w, h = coco["annotations"][0]["bbox"]
    assert 30 < w < 60 and 30 < h < 60 and abs(x0 + w / 2 - 64) < 6 and abs(y0 + h / 2 - 48) < 6
    from pycocotools.coco import COCO

    COCO(str(project.annotations_dir / "export" / "coco.json"))
