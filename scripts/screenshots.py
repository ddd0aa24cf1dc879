"""Screenshots of the PPO and Compare tabs showing finished runs (for the README), in headless Chromium.

Starts the app on a runs folder that already holds a reward, a PPO and a compare run (e.g. from
benchmarks/bench_learning.py: copy or link them into one folder), opens each tab with the newest run selected and
saves full-page PNGs.

    .venv/bin/python scripts/screenshots.py --runs RUNS_DIR --out assets
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", required=True, help="runs folder with finished reward, PPO and compare runs")
    p.add_argument("--out", default="assets")
    p.add_argument("--chromium", default="/usr/bin/chromium")
    args = p.parse_args()
    from playwright.sync_api import sync_playwright

    port = free_port()
    env = {**os.environ, "LAB_RUNS_DIR": str(Path(args.runs).resolve()), "GRADIO_SERVER_PORT": str(port),
           "LAB_PRESET": "cpu", "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    app = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.STDOUT)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector("#data-cards .pair-card", timeout=90_000)
            for tab, ready in (("PPO", "#ppo-plot-0 .js-plotly-plot"), ("Compare", "#compare-paired .js-plotly-plot")):
                page.get_by_role("tab", name=tab).click()
                page.wait_for_selector(ready, timeout=60_000)
                page.wait_for_timeout(4000)  # the timer tick draws the newest run
                path = out / f"screenshot-{tab.lower()}.png"
                page.screenshot(path=str(path), full_page=True)
                print(path)
            browser.close()
    finally:
        app.terminate()
        app.wait(20)


if __name__ == "__main__":
    main()
