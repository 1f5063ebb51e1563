"""The dashboard as an operator sees it, in a real headless browser (Debian's chromium, driven by Playwright).

* The first frame is complete without the event stream (the page carries a
  snapshot): totals, idle and complete jobs told apart, times in ISO 8601 with
  the zone, a backup job with its counts, buttons disabled where they would
  change nothing.
* Live: a single large object's bytes grow between two frames; a pause shows
  ``pausing`` then ``paused``; each button's answer is written beside it.
* Sixty jobs: the compact table, switchable to cards and back; a refused
  reload shows red until a later reload is applied.

Skipped only when /usr/bin/chromium is missing (Debian: ``apt-get install -y
chromium``). Screenshots are kept under the test's tmp_path, and copied to
``$VERTEXFLOW_TEST_ARTIFACTS`` when that is set.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

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
#: the browser's zone, unlike the machine's (UTC here): the page must say which one its times are in
ZONE = "Asia/Kolkata"
MiB = 1024 * 1024


def closed_window() -> str:
    """A daily window that is not open now (two hours from now, an hour long)."""
    start = (datetime.now().hour + 2) % 24
    return f"{start:02d}:00-{start + 1:02d}:00"


CONFIG = """
[daemon]
listen = "127.0.0.1:{PORT}"
drain_timeout = "1s"
backoff_initial = "1h"

[[jobs]]
name = "big"
kind = "sync"
source = "big"
dest = "big-copy"
transfers = 1
bwlimit = "512k"

[[jobs]]
name = "done"
kind = "sync"
source = "small"
dest = "small-copy"

[[jobs]]
name = "fresh"
kind = "sync"
source = "small"
dest = "fresh-copy"

[[jobs]]
name = "broken"
kind = "sync"
source = "missing"
dest = "nowhere"
interval = "1h"

[[jobs]]
name = "late"
kind = "sync"
source = "small"
dest = "late-copy"
expected_interval = "1s"

[[jobs]]
name = "archive"
kind = "backup"
source = "small"
dest = "backups"

[[jobs]]
name = "night"
kind = "sync"
source = "small"
dest = "night-copy"
interval = "1h"
windows = ["WINDOW"]
"""


def _browser(sync_api: Any, p: Any) -> Any:
    return p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)


def _keep(shot: Path) -> None:
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if out := os.environ.get("VERTEXFLOW_TEST_ARTIFACTS"):
        shutil.copy(shot, Path(out) / shot.name)


#: installed in the page: every frame's state, bar, bytes and progress line of each job, as the page drew them
#: (recorded by the page itself, so a busy machine running the test misses none)
RECORDER = """() => {
  window.frames_seen = [];
  new MutationObserver((records) => {
    for (const r of records) {
      const e = r.target;
      if (!e.dataset || !e.dataset.job) continue;
      window.frames_seen.push([e.dataset.job, e.dataset.state, e.dataset.bar, Number(e.dataset.movedBytes),
                               e.querySelector('.progress-text').textContent]);
    }
  }).observe(document.getElementById('jobs'), {subtree: true, attributes: true,
                                               attributeFilter: ['data-state', 'data-moved-bytes', 'data-bar']});
}"""


def _frames(page: Any, job: str) -> list[tuple[str, str, int, str]]:
    """What the page drew for ``job`` since RECORDER was installed: (state, bar, moved bytes, progress line)."""
    return [tuple(f[1:]) for f in page.evaluate("() => window.frames_seen") if f[0] == job]


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, ZoneInfo(ZONE)).isoformat(timespec="seconds")


def test_first_frame_live_bytes_pause_and_buttons(tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    (tmp_path / "small").mkdir()
    for i in range(5):
        (tmp_path / "small" / f"doc-{i}.txt").write_bytes(os.urandom(3000 + i))
    (tmp_path / "big").mkdir()
    for name in ("a.bin", "b.bin"):  # 3 MiB each at 512 KiB/s: 6 s apiece, with transfers = 1
        (tmp_path / "big" / name).write_bytes(os.urandom(3 * MiB))
    d = DaemonProcess(tmp_path, CONFIG.replace("WINDOW", closed_window())).start()
    try:
        for name in ("done", "archive"):
            assert d.post(f"/api/jobs/{name}/start")[0] == 200
        for name in ("done", "archive"):
            wait_until(lambda n=name: (d.job(n)["last_result"] or {}).get("outcome") == "success", 20,
                       what=f"{name} to succeed")
        wait_until(lambda: d.job("broken")["state"] == "failed", 20, what="broken to fail")
        wait_until(lambda: d.job("late")["overdue"], 20, what="late to be overdue")
        done_success = d.job("done")["last_success"]

        with sync_api.sync_playwright() as p:
            browser = _browser(sync_api, p)
            try:
                context = browser.new_context(viewport={"width": 1400, "height": 900}, timezone_id=ZONE)
                page = context.new_page()
                outside: list[str] = []
                page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(d.url) else None)
                # no stream and no snapshot request: the first frame is the page alone
                page.route("**/events", lambda route: route.abort())
                page.route("**/api/snapshot", lambda route: route.abort())
                page.goto(d.url + "/", wait_until="domcontentloaded")
                assert page.locator(".job").count() == 7  # drawn before anything else was asked for
                assert page.locator("body").get_attribute("data-view") == "cards"
                assert "connecting" not in page.locator("header").inner_text()
                page.screenshot(path=str(tmp_path / "dashboard-first-frame.png"), full_page=True)
                _keep(tmp_path / "dashboard-first-frame.png")

                def job(name: str) -> Any:
                    return page.locator(f'.job[data-job="{name}"]')

                def total(key: str) -> str:
                    return page.locator(f'.total[data-total="{key}"]').get_attribute("data-value") or ""

                assert (total("jobs"), total("running"), total("failing"), total("overdue")) == ("7", "0", "1", "1")
                assert "hot" in (page.locator('.total[data-total="overdue"]').get_attribute("class") or "")

                # idle and complete look different: an empty bar and "no run yet", a full green one
                fresh, done = job("fresh"), job("done")
                assert fresh.get_attribute("data-bar") == "idle" and done.get_attribute("data-bar") == "complete"
                assert "no run yet" in fresh.locator(".progress-text").inner_text()
                assert "complete" in done.locator(".progress-text").inner_text()
                widths = page.evaluate("""() => ['fresh', 'done'].map((n) => {
                    const bar = document.querySelector(`.job[data-job="${n}"] .bar`);
                    return [bar.firstElementChild.getBoundingClientRect().width, bar.getBoundingClientRect().width,
                            getComputedStyle(bar.firstElementChild).backgroundColor];
                })""")
                assert widths[0][0] == 0 and widths[1][0] == pytest.approx(widths[1][1], abs=1)
                assert widths[1][2] == "rgb(26, 127, 55)"  # green: complete, not the running blue

                # times: ISO 8601 in the browser's zone, with its offset
                assert done.locator(".success").inner_text().startswith(_iso(done_success) + " (")
                assert re.search(r"at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+05:30$", done.locator(".last").inner_text())
                night = d.job("night")
                assert job("night").locator(".next").inner_text().startswith(_iso(night["next_run_at"]))
                assert "+05:30" in job("night").locator(".next").inner_text()

                # a backup job, with what it wrote
                archive = job("archive")
                assert re.fullmatch(r"backup: \S+/small → \S+/backups", archive.locator(".route").inner_text())
                assert archive.get_attribute("data-bar") == "complete"
                assert "5 objects" in archive.locator(".last").inner_text()

                # buttons that would change nothing are disabled, and say why
                start_night = job("night").locator('button[data-action="start"]')
                assert start_night.is_disabled() and "outside its windows" in (start_night.get_attribute("title") or "")
                assert job("fresh").locator('button[data-action="resume"]').is_disabled()
                assert job("fresh").locator('button[data-action="start"]').is_enabled()
                assert "alert" in (job("broken").get_attribute("class") or "")

                # live: the stream opens, and the page follows it
                page.unroute("**/events")
                page.unroute("**/api/snapshot")
                page.reload(wait_until="domcontentloaded")
                page.wait_for_function("document.querySelector('#conn').textContent === 'live'", timeout=10_000)
                big = job("big")
                big.locator('button[data-action="start"]').click()
                result = big.locator(".result")
                page.wait_for_function("document.querySelector('.job[data-job=\"big\"] .result').textContent"
                                       ".startsWith('start: started')", timeout=10_000)
                assert result.is_visible()  # written beside the buttons, not only in a tooltip
                page.wait_for_selector('.job[data-job="big"][data-state="running"]', timeout=10_000)
                assert big.locator('button[data-action="start"]').is_disabled()
                assert big.locator('button[data-action="resume"]').is_disabled()

                # a running job's bytes grow between two frames, within one object
                def moved() -> int:
                    return int(big.get_attribute("data-moved-bytes") or 0)

                page.wait_for_function("Number(document.querySelector('.job[data-job=\"big\"]')"
                                       ".dataset.movedBytes) > 0", timeout=10_000)
                first, first_text = moved(), big.locator(".progress-text").inner_text()
                page.screenshot(path=str(tmp_path / "dashboard-running-1.png"), full_page=True)
                page.wait_for_function(f"Number(document.querySelector('.job[data-job=\"big\"]')"
                                       f".dataset.movedBytes) > {first}", timeout=10_000)
                second, second_text = moved(), big.locator(".progress-text").inner_text()
                page.screenshot(path=str(tmp_path / "dashboard-running-2.png"), full_page=True)
                assert first < second < 3 * MiB and first_text != second_text
                assert big.get_attribute("data-done-objects") == "0"  # still the first object
                assert total("running") == "1" and float(total("rate")) > 0
                _keep(tmp_path / "dashboard-running-2.png")

                # pause: "pausing" while the object in flight finishes, then "paused", from the stream
                page.evaluate(RECORDER)
                assert d.post("/api/jobs/big/pause")[1]["state"] == "pausing"
                page.wait_for_selector('.job[data-job="big"][data-state="paused"]', timeout=30_000)
                states = [f[0] for f in _frames(page, "big")]
                assert "pausing" in states and states[-1] == "paused", states
                assert states.index("pausing") < states.index("paused")
                assert big.locator(".badge").inner_text().startswith("paused")
                assert big.locator('button[data-action="pause"]').is_disabled()
                assert big.locator('button[data-action="resume"]').is_enabled()
                assert total("held") == "1"

                big.locator('button[data-action="cancel"]').click()
                page.wait_for_function("document.querySelector('.job[data-job=\"big\"] .result').textContent"
                                       ".startsWith('cancel: cancelled')", timeout=10_000)
                cancel = big.locator('button[data-action="cancel"]')
                assert cancel.get_attribute("title") == "not now: already cancelled"
                page.wait_for_selector('.job[data-job="big"][data-state="cancelled"]', timeout=10_000)
                big.locator('button[data-action="resume"]').click()
                page.wait_for_function("document.querySelector('.job[data-job=\"big\"] .result').textContent"
                                       ".startsWith('resume: resumed')", timeout=10_000)
                page.wait_for_selector('.job[data-job="big"][data-state="running"]', timeout=10_000)
                assert not outside, f"the page asked for something elsewhere: {outside}"
                # each event brings one throughput sample a job; the page keeps the five minutes it graphs
                with urllib.request.urlopen(d.url + "/events", timeout=5) as stream:
                    assert stream.readline() == b"event: jobs\n"
                    event = json.loads(stream.readline().removeprefix(b"data: "))
                assert all(len(j["throughput"]) <= 1 and "results" not in j for j in event["jobs"])
                assert len(d.job("big")["throughput"]) > 3
                assert page.evaluate("() => history.get('big').length") > 3
            finally:
                browser.close()
    finally:
        d.stop()


MANY = 60


def test_sixty_jobs_in_the_compact_table_and_reload_errors_that_clear(tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f.txt").write_text("hello")
    jobs = "".join(f'\n[[jobs]]\nname = "job-{i:02d}"\nkind = "sync"\nsource = "src"\ndest = "dst-{i:02d}"\n'
                   for i in range(MANY))
    good = '[daemon]\nlisten = "127.0.0.1:{PORT}"\ndrain_timeout = "1s"\n' + jobs
    d = DaemonProcess(tmp_path, good).start()
    try:
        assert d.post("/api/jobs/job-01/start")[0] == 200
        wait_until(lambda: d.job("job-01")["last_result"], 20, what="job-01's run")
        with sync_api.sync_playwright() as p:
            browser = _browser(sync_api, p)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.goto(d.url + "/", wait_until="domcontentloaded")
                rows = page.locator("#table tr.job")
                assert page.locator("body").get_attribute("data-view") == "table"  # auto: many jobs
                assert rows.count() == MANY and page.locator(".job.card").count() == 0
                assert page.locator('.total[data-total="jobs"]').get_attribute("data-value") == str(MANY)
                heights = page.evaluate("() => [...document.querySelectorAll('#table tr.job')]"
                                        ".map((r) => r.getBoundingClientRect().height)")
                assert max(heights) < 60, heights  # compact: one line or two per job
                assert rows.nth(1).get_attribute("data-bar") == "complete"
                assert rows.nth(2).get_attribute("data-bar") == "idle"
                render_ms = page.evaluate("() => { const t = performance.now(); for (let i = 0; i < 10; i++) "
                                          "render(current); return (performance.now() - t) / 10; }")
                print(f"rendering {MANY} jobs in the table: {render_ms:.1f} ms")
                page.screenshot(path=str(tmp_path / "dashboard-table.png"), full_page=True)
                _keep(tmp_path / "dashboard-table.png")

                # a button in the table answers in its row
                row = page.locator('#table tr.job[data-job="job-07"]')
                row.locator('button[data-action="pause"]').click()
                page.wait_for_function("document.querySelector('tr.job[data-job=\"job-07\"] .result').textContent"
                                       ".startsWith('pause: paused')", timeout=10_000)
                page.wait_for_selector('tr.job[data-job="job-07"][data-state="paused"]', timeout=10_000)
                assert row.locator('button[data-action="pause"]').is_disabled()

                # switchable: cards, then back to the table (the choice is remembered across a reload)
                page.select_option("#view", "cards")
                assert page.locator(".job.card").count() == MANY and rows.count() == 0
                page.reload(wait_until="domcontentloaded")
                assert page.locator("body").get_attribute("data-view") == "cards"
                page.select_option("#view", "auto")
                assert rows.count() == MANY

                # a refused reload is red until a later reload is applied
                d.write_config(good.replace("drain_timeout", "drain_timeout_typo"))
                d.signal(signal.SIGHUP)
                refused = page.locator("#daemon-errors p")
                refused.first.wait_for(timeout=10_000)
                assert "reload refused" in refused.first.inner_text()
                assert "REFUSED" in page.locator("#daemon-meta").inner_text()
                d.write_config(good)
                d.signal(signal.SIGHUP)
                page.wait_for_function("document.querySelectorAll('#daemon-errors p').length === 0", timeout=10_000)
                assert "last reload applied" in page.locator("#daemon-meta").inner_text()
                assert d.get("/api/errors")["errors"][-1]["kind"] == "config"  # still in the log, not on screen
            finally:
                browser.close()
    finally:
        d.stop()


def _platform(tmp_path: Path, files: dict[str, bytes]) -> tuple[Path, Path]:
    """A platform whose company acme keeps ``files`` on local storage, with a connection "nas" to move to."""
    import asyncio

    from vertexflow.tenancy import StorageManager

    raw = {"portraits": {"storage_type": "local"}, "local": {"base_path": str(tmp_path / "files")},
           "connections": {"nas": {"type": "local", "path": str(tmp_path / "nas")}}}
    cfg, db = tmp_path / "storage_config.json", tmp_path / "platform.db"
    cfg.write_text(json.dumps(raw))

    async def fill() -> None:
        async with StorageManager.open(cfg, db) as m:
            acme = m.registry.add_company("acme")
            for key, data in files.items():
                await m.save_file("portraits", key, data, company_id=acme.id)

    asyncio.run(fill())
    return cfg, db


def _fill_disk(url: str, files: dict[str, bytes]) -> None:
    import asyncio

    from vertexflow.backends.yandex import YandexDiskBackend
    from vertexflow.model import ObjectInfo, body_from_bytes

    async def fill() -> None:
        async with YandexDiskBackend("/data", token="t", base_url=url) as disk:
            for key, data in files.items():
                await disk.put(ObjectInfo(key=key, size=len(data)), body_from_bytes(data))

    asyncio.run(fill())


def test_migration_and_backup_show_their_progress_as_copies_do(tmp_path: Path) -> None:
    """A company migration (paced by its bwlimit) and a backup (of a Yandex.Disk tree answering slowly)
    are drawn while they run like a copy: a bar, objects and bytes of the total, growing."""
    import subprocess
    import sys

    from .helpers import free_port

    sync_api = pytest.importorskip("playwright.sync_api")
    company = {f"cat{i}/Image/p{i}.bin": os.urandom(256 * 1024) for i in range(6)}  # 1.5 MiB at 256 KiB/s
    cfg, db = _platform(tmp_path, company)
    disk = {f"photos/p{i:02d}.jpg": os.urandom(64 * 1024 + i) for i in range(8)}
    port = free_port()

    def emulate(*knobs: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "vertexflow", "emulate", "yandex-disk", "--port", str(port),
                                 "--data-dir", str(tmp_path / "disk"), *knobs], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)

    (tmp_path / "disk").mkdir()
    url = f"http://127.0.0.1:{port}/v1/disk"
    emulator = emulate()
    try:
        wait_until(lambda: socket.create_connection(("127.0.0.1", port), timeout=2).close() is None, 20,
                   what="the emulator to listen")
        _fill_disk(url, disk)
    finally:
        emulator.terminate()
        emulator.wait(10)
    # the same files, every request 0.15 s late: objects read one after another take seconds
    emulator = emulate("--latency", "0.15")
    try:
        wait_until(lambda: socket.create_connection(("127.0.0.1", port), timeout=2).close() is None, 20,
                   what="the emulator to listen again")
        config = (f'[daemon]\nlisten = "127.0.0.1:{{PORT}}"\ndrain_timeout = "1s"\n\n'
                  f'[remotes.yd]\ntype = "yandex_disk"\ntoken = "t"\nbase_url = "{url}"\nroot = "/data"\n\n'
                  '[[jobs]]\nname = "move-acme"\nkind = "migrate"\nsource = "acme"\ndest = "nas"\nbwlimit = "256k"\n'
                  f'options = {{ db = "{db}", storage_config = "{cfg}", live = false }}\n\n'
                  '[[jobs]]\nname = "photos-backup"\nkind = "backup"\nsource = "yd:"\ndest = "backups"\n')
        d = DaemonProcess(tmp_path, config).start()
        try:
            with sync_api.sync_playwright() as p:
                browser = _browser(sync_api, p)
                try:
                    page = browser.new_page(viewport={"width": 1400, "height": 900})
                    page.goto(d.url + "/", wait_until="domcontentloaded")
                    page.wait_for_function("document.querySelector('#conn').textContent === 'live'",
                                           timeout=10_000)
                    totals = {"move-acme": sum(map(len, company.values())),
                              "photos-backup": sum(map(len, disk.values()))}
                    shot = tmp_path / "dashboard-migrate-backup.png"
                    page.evaluate(RECORDER)
                    for name in totals:
                        assert d.post(f"/api/jobs/{name}/start")[0] == 200
                    deadline = time.monotonic() + 60
                    while time.monotonic() < deadline:
                        bars = [page.locator(f'.job[data-job="{n}"]').get_attribute("data-bar") for n in totals]
                        if bars == ["complete", "complete"]:
                            break
                        moving_now = all(any(f[1] == "running" and 0 < f[2] < totals[n] for f in _frames(page, n))
                                         for n in totals)
                        if not shot.exists() and bars == ["running", "running"] and moving_now:
                            page.screenshot(path=str(shot), full_page=True)  # both seen moving
                        page.wait_for_timeout(200)
                    if not shot.exists():  # they did not overlap: the end, then
                        page.screenshot(path=str(shot), full_page=True)
                    seen = {n: [(f[2], f[3]) for f in _frames(page, n) if f[1] == "running"] for n in totals}
                    for name, total in totals.items():
                        moving = sorted({m for m, _ in seen[name] if 0 < m < total})
                        assert len(moving) >= 2, (f"{name}: its bytes were not seen moving: {_frames(page, name)}, "
                                                  f"{d.job(name)['last_result']}")
                        text = next(t for m, t in seen[name] if m == moving[-1])
                        assert re.search(r"\d+ of \d+ objects, .+ of .+", text), text
                        card = page.locator(f'.job[data-job="{name}"]')
                        assert card.get_attribute("data-bar") == "complete", name
                        assert card.locator(".last").inner_text().startswith("success")
                    assert page.locator(f'.job[data-job="move-acme"] .route').inner_text() == "migrate: acme → nas"
                finally:
                    browser.close()
        finally:
            d.stop()
    finally:
        emulator.terminate()
        emulator.wait(10)
    _keep(tmp_path / "dashboard-migrate-backup.png")
    assert sorted(p.name for p in (tmp_path / "nas").rglob("*.bin")) == sorted(k.rsplit("/", 1)[1] for k in company)
