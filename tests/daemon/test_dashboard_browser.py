"""The dashboard in a real headless browser (Debian's chromium, driven by Playwright).

Skipped only when /usr/bin/chromium is missing (Debian: ``apt-get install -y
chromium``). The screenshot it takes is kept under the test's tmp_path, and
copied to ``$VERTEXFLOW_TEST_ARTIFACTS`` when that is set.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from .helpers import DaemonProcess, wait_until

CHROMIUM = "/usr/bin/chromium"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed "
                       "(apt-get install -y chromium)"),
]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

CONFIG = """
[daemon]
listen = "127.0.0.1:{PORT}"
drain_timeout = "1s"

[[jobs]]
name = "photos"
kind = "sync"
source = "photos"
dest = "photos-copy"
transfers = 1
bwlimit = "256k"

[[jobs]]
name = "broken"
kind = "sync"
source = "missing"
dest = "nowhere"
interval = "1h"
backoff_initial = "1h"
"""


def test_dashboard_shows_a_running_job_live(tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(12):
        (photos / f"img-{i:02d}.jpg").write_bytes(os.urandom(128 * 1024))  # 1.5 MiB: ~6 s at 256 KiB/s
    d = DaemonProcess(tmp_path, CONFIG.replace('backoff_initial = "1h"\n', "")).start()
    shot = tmp_path / "dashboard.png"
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1200, "height": 800})
                page.goto(d.url + "/", wait_until="domcontentloaded")
                photos_card = page.locator('.job[data-job="photos"]')
                photos_card.wait_for(timeout=10_000)
                # drawn from the snapshot the page carries, then live
                assert page.locator("#conn").inner_text(timeout=5_000).startswith(("live", "snapshot"))
                # the failing job shows red (its card is marked as an alert)
                page.wait_for_selector('.job[data-job="broken"].alert', timeout=10_000)
                assert "failed" in page.locator('.job[data-job="broken"] .badge').inner_text()

                assert d.post("/api/jobs/photos/start")[0] == 200
                page.wait_for_selector('.job[data-job="photos"][data-state="running"]', timeout=10_000)

                def done_bytes() -> int:
                    return int(photos_card.get_attribute("data-done-bytes") or 0)

                seen = [done_bytes()]
                deadline = time.monotonic() + 20
                while len(set(seen)) < 3 and time.monotonic() < deadline:  # three different values, live
                    page.wait_for_timeout(400)
                    seen.append(done_bytes())
                assert len(set(seen)) >= 3, f"progress did not change on the page: {seen}"
                assert seen[-1] > seen[0]
                text = photos_card.locator(".progress-text").inner_text()
                assert " of " in text and "objects" in text
                assert photos_card.locator(".bwlimit").inner_text() == "256.00 KiB/s"
                assert photos_card.locator(".rate").inner_text().endswith("/s")
                page.screenshot(path=str(shot), full_page=True)
                wait_until(lambda: d.job("photos")["last_result"], 20, what="the run to finish")
                page.wait_for_function(
                    "document.querySelector('.job[data-job=\"photos\"] .last').textContent.startsWith('success')",
                    timeout=10_000)
            finally:
                browser.close()
    finally:
        d.stop()
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if out := os.environ.get("VERTEXFLOW_TEST_ARTIFACTS"):
        shutil.copy(shot, Path(out) / "dashboard.png")
