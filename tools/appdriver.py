"""Drive the explorer in a real browser: start `streamlit run app/main.py`, open it in headless Chromium
(Playwright), time first paint and time to interactive, and measure a live run. Shared by tests/test_browser.py,
tests/test_offline.py and bench/bench_app.py."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

# counts Plotly redraws of the first chart (a new _fullLayout per Plotly.react), those that changed its data,
# and the live panel's refreshes (its "live: refresh #n" caption)
COUNTER = """(() => { window.__redraws = 0; window.__changes = 0; window.__refreshes = 0; let fl = null, last = null, r = null;
  setInterval(() => { const m = document.body.textContent.match(/live: refresh #(\\d+)/);
    if (m && m[1] !== r) { r = m[1]; window.__refreshes++; }
    const p = document.querySelector('.js-plotly-plot'); if (!p || !p._fullLayout) return;
    if (p._fullLayout !== fl) { fl = p._fullLayout; window.__redraws++;
      const s = JSON.stringify(p.data[0].y); if (s !== last) { last = s; window.__changes++; } } }, 25); })()"""


class Url(str):
    """The server's URL, with the pid of its process."""

    pid: int


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(runs: Path, log_path: Path, flags: tuple[str, ...] = ()) -> Iterator[str]:
    """A fresh `streamlit run app/main.py` writing runs under `runs`; yields its URL once healthy. On exit the
    server is stopped and its log checked for the concurrent-import failure (partially initialized module).
    `flags`: more `streamlit run` options, e.g. ("--runner.postScriptGC", "true"). The URL's `.pid` is the server's."""
    port = free_port()
    env = {**os.environ, "GEODESIC_RUNS": str(runs), "PYTHONPATH": str(ROOT)}
    with open(log_path, "w+") as log:
        proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.headless", "true",
                                 "--server.port", str(port), "--browser.gatherUsageStats", "false",
                                 "--server.fileWatcherType", "none", *flags], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = Url(f"http://127.0.0.1:{port}")
        url.pid = proc.pid
        try:
            t0 = time.time()
            while True:
                try:
                    urllib.request.urlopen(url + "/_stcore/health", timeout=1)
                    break
                except OSError:
                    if proc.poll() is not None or time.time() - t0 > 60:
                        log.seek(0)
                        raise RuntimeError("streamlit did not start:\n" + log.read())
                    time.sleep(0.1)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.seek(0)
        text = log.read()
    if "partially initialized module" in text:
        raise AssertionError(text)


@contextmanager
def chromium() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


def first_paint(page, url: str) -> float:
    """Seconds from navigation start until the sidebar navigation and the page's title are both drawn."""
    t0 = time.perf_counter()
    page.goto(url, wait_until="commit")
    page.wait_for_selector('[data-testid="stSidebarNav"]', timeout=30_000)
    page.wait_for_selector("h1", timeout=30_000)
    return time.perf_counter() - t0


# what makes each page usable (by its URL path): its primary button, or its first input where it has none;
# "run": the page shows it only when the runs folder holds a run
CONTROLS = {"": ("Sparsify", "button", "Start", False),
            "candidates": ("Candidate paths", "button", "Start candidates", False),
            "damage": ("Damage & recovery", "button", "Damage and race", False),
            "two_tasks": ("Two tasks", "button", "Start walk", False),
            "playground": ("Playground", "stSlider", "start w1", False),
            "trajectories": ("Trajectories", "stMultiSelect", "Runs", True),
            "runs": ("Runs", "stMultiSelect", "Open / compare", True),
            "sweeps": ("Sweeps", "stSelectbox", "Sweep", False)}

# true once the main area shows `label` on a visible, enabled, current (not stale) control of `kind`
USABLE = """([kind, label]) => {
  const main = document.querySelector('[data-testid="stMainBlockContainer"]'); if (!main) return false;
  const ok = el => el.offsetParent !== null && !el.closest('[data-stale="true"]');
  if (kind === 'button')
    return [...main.querySelectorAll('button')].some(b => b.innerText.trim() === label && !b.disabled && ok(b));
  return [...main.querySelectorAll(`[data-testid="${kind}"]`)].some(w => w.innerText.split('\\n')[0].trim() === label
    && ok(w) && !w.querySelector('[disabled], [aria-disabled="true"]'));
}"""


def time_to_interactive(page, url: str, path: str = "", timeout: float = 60) -> dict:
    """Seconds from navigation start to first paint (navigation + the page's title) and to time to interactive:
    the page's control in CONTROLS (its primary button: Start, Run…) drawn, visible, enabled and not stale."""
    _, kind, label, _ = CONTROLS[path]
    t0 = time.perf_counter()
    page.goto(f"{url}/{path}", wait_until="commit")
    page.wait_for_selector('[data-testid="stSidebarNav"]', timeout=timeout * 1000)
    page.wait_for_selector("h1", timeout=timeout * 1000)
    paint = time.perf_counter() - t0
    page.wait_for_function(USABLE, arg=[kind, label], timeout=timeout * 1000, polling=20)
    return {"first_paint_s": paint, "tti_s": time.perf_counter() - t0}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_quiet(pid: int, below: float = 0.05, window: float = 2.0, timeout: float = 120) -> float:
    """Wait until the process used less than `below` of a core over `window` seconds (the server has loaded the
    engine and compiled what it compiles in the background); returns the seconds waited."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        c0 = cpu_seconds(pid)
        time.sleep(window)
        if cpu_seconds(pid) - c0 < below * window:
            break
    return time.perf_counter() - t0


@contextmanager
def busy_core() -> Iterator[None]:
    """One core kept busy by a spinning process for the duration (the machine's other work)."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        proc.terminate()
        proc.wait(10)


def wait_idle(page, timeout: float = 30) -> None:
    """Until the app is not running a script (the status widget disappears)."""
    page.wait_for_timeout(300)
    page.wait_for_function("!document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout * 1000)


def rows_shown(page) -> int:
    m = page.evaluate("(document.body.innerText.match(/: (?:running|paused), (\\d+) rows/) || [0, -1])[1]")
    return int(m)


def start_sparsify(page, checkpoint: str, max_steps: int = 400) -> None:
    """On the Sparsify page: pick a shipped checkpoint, set Max steps, press Start, wait for both charts (a press
    before the engine has loaded waits for it first)."""
    page.locator('[data-testid="stSelectbox"]').filter(has_text="Checkpoint").click()
    page.get_by_role("option", name=checkpoint).click()
    wait_idle(page)
    ms = page.get_by_role("spinbutton", name="Max steps")
    ms.fill(str(max_steps))
    ms.press("Enter")
    wait_idle(page)
    page.get_by_test_id("stMainBlockContainer").get_by_role("button", name="Start", exact=True).click()
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 2", timeout=120_000)


def measure_live(page, seconds: float, after_rows: int = 15) -> dict:
    """Rates seen in the browser during a running job, over `seconds`, once it shows `after_rows` rows (the first
    steps include one-time set-up): live panel refreshes, chart redraws and data changes, and engine steps."""
    page.wait_for_function(f"(document.body.innerText.match(/running, (\\d+) rows/) || [0, 0])[1] >= {after_rows}",
                           timeout=120_000)
    page.evaluate(COUNTER)
    rows0, t0 = rows_shown(page), time.perf_counter()
    server_ms = []
    while time.perf_counter() - t0 < seconds:
        m = page.evaluate("(document.body.textContent.match(/this redraw took (\\d+) ms/) || [0, -1])[1]")
        if int(m) >= 0:
            server_ms.append(int(m))
        page.wait_for_timeout(250)
    dt = time.perf_counter() - t0
    redraws, changes, refreshes = page.evaluate("[window.__redraws, window.__changes, window.__refreshes]")
    return {"live_refreshes_per_s": refreshes / dt,
            "chart_redraws_per_s": redraws / dt,  # Plotly redraws: only when a refresh brings new steps
            "chart_updates_per_s": changes / dt,
            "steps_per_s": (rows_shown(page) - rows0) / dt,
            "server_redraw_ms_median": sorted(server_ms)[len(server_ms) // 2] if server_ms else None}
