"""Click through the running app in headless Chromium, as a workshop visitor would.

Starts `app.py` on the cpu preset with a fresh runs folder, then drives all four tabs with tiny settings and saves a
screenshot of each (to LAB_SCREENSHOT_DIR, default a temp folder). A second browser context checks that another
visitor sees the running job and cannot start a second one.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"),
]
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    runs = tmp_path_factory.mktemp("browser-runs")
    port = _free_port()
    env = {**os.environ, "LAB_RUNS_DIR": str(runs), "GRADIO_SERVER_PORT": str(port), "LAB_PRESET": "cpu",
           "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    log = open(runs / "app.log", "w")
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None, (runs / "app.log").read_text()
            time.sleep(0.3)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(20)


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    out = os.environ.get("LAB_SCREENSHOT_DIR")
    path = Path(out) if out else tmp_path_factory.mktemp("shots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _open(browser, url):
    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    page.goto(url)
    page.wait_for_selector("#data-cards .pair-card", timeout=60_000)
    return page


def _tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()
    page.wait_for_timeout(500)


def test_data_tab(browser, app_url, shots):
    page = _open(browser, app_url)
    assert page.locator("#data-cards .pair-card").count() == 5
    assert "204" in page.locator("#data-stats").inner_text()
    page.get_by_label("Search text").fill("resume")
    page.get_by_label("Search text").press("Enter")
    page.wait_for_function("document.querySelector('#data-page').innerText.includes('matching pairs')")
    assert "resume" in page.locator("#data-cards").inner_text().lower()
    page.get_by_label("Search text").fill("")
    page.get_by_label("Search text").press("Enter")
    page.wait_for_timeout(800)
    page.screenshot(path=str(shots / "screenshot-data.png"), full_page=True)
    page.context.close()
