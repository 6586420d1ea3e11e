"""Real headless Chromium (Playwright) against `streamlit run app/main.py`: first paint, every page, a live run.

Skipped only when /usr/bin/chromium is missing. Screenshots go to tests/artifacts/ (gitignored); the measured
first-paint times and chart update rate are printed and written to tests/artifacts/browser-timings.json.
"""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ART = ROOT / "tests" / "artifacts"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
PAGES = [("Candidate paths", "Candidate paths"), ("Trajectories", "Weight trajectories"),
         ("Damage & recovery", "Damage"), ("Two tasks", "Two tasks"), ("Playground", "Playground"),
         ("Theory", "Theory"), ("Runs", "Runs on disk"), ("Sparsify", "Sparsify")]

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} not installed (make browser)")
    port = free_port()
    runs = tmp_path_factory.mktemp("browser-runs")
    env = {**os.environ, "GEODESIC_RUNS": str(runs), "PYTHONPATH": str(ROOT)}
    log = open(tmp_path_factory.mktemp("log") / "server.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.headless", "true",
                             "--server.port", str(port), "--browser.gatherUsageStats", "false",
                             "--server.fileWatcherType", "none"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    t0 = time.time()
    while time.time() - t0 < 60:
        try:
            urllib.request.urlopen(url + "/_stcore/health", timeout=1)
            break
        except OSError:
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail("streamlit exited:\n" + log.read())
            time.sleep(0.1)
    yield url, runs
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.seek(0)
    text = log.read()
    assert "partially initialized module" not in text, text


@pytest.fixture(scope="module")
def browser(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def first_paint(page, url: str) -> float:
    """Seconds from navigation start until the sidebar navigation and the page's title are both drawn."""
    t0 = time.perf_counter()
    page.goto(url, wait_until="commit")
    page.wait_for_selector('[data-testid="stSidebarNav"]', timeout=30_000)
    page.wait_for_selector("h1", timeout=30_000)
    return time.perf_counter() - t0


# counts Plotly redraws of the first chart (a new _fullLayout per Plotly.react) and those that changed its data
COUNTER = """(() => { window.__redraws = 0; window.__changes = 0; window.__refreshes = 0; let fl = null, last = null, r = null;
  setInterval(() => { const m = document.body.textContent.match(/live: refresh #(\\d+)/);
    if (m && m[1] !== r) { r = m[1]; window.__refreshes++; }
    const p = document.querySelector('.js-plotly-plot'); if (!p || !p._fullLayout) return;
    if (p._fullLayout !== fl) { fl = p._fullLayout; window.__redraws++;
      const s = JSON.stringify(p.data[0].y); if (s !== last) { last = s; window.__changes++; } } }, 25); })()"""


def rows_shown(page) -> int:
    m = page.evaluate("(document.body.innerText.match(/: (?:running|paused), (\\d+) rows/) || [0, -1])[1]")
    return int(m)


def no_exception(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0, page.locator('[data-testid="stException"]').first.inner_text()


def wait_idle(page, timeout: float = 30) -> None:
    """Until the app is not running a script (the status widget disappears)."""
    page.wait_for_timeout(300)
    page.wait_for_function("!document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout * 1000)


def test_browser_end_to_end(server, browser):
    url, runs = server
    ART.mkdir(parents=True, exist_ok=True)
    timings = {}
    ctx = browser.new_context(viewport={"width": 1400, "height": 1600})
    page = ctx.new_page()
    timings["first_visit_s"] = first_paint(page, url)  # right after server start: the pandas import race
    assert page.locator("h1").first.inner_text().startswith("Sparsify")
    no_exception(page)
    tab = ctx.new_page()
    timings["new_tab_s"] = first_paint(tab, url)
    no_exception(tab)
    tab.close()

    # a live mlp run: start, watch the charts update, stop
    page.locator('[data-testid="stSelectbox"]').filter(has_text="Checkpoint").click()
    page.get_by_role("option", name="lenet60-fashion-mnist").click()
    wait_idle(page)
    ms = page.get_by_label("Max steps")
    ms.fill("400")
    ms.press("Enter")
    wait_idle(page)
    page.get_by_test_id("stMainBlockContainer").get_by_role("button", name="Start", exact=True).click()
    page.wait_for_selector(".js-plotly-plot", timeout=30_000)
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 2", timeout=60_000)
    page.wait_for_function("/running, (1[5-9]|[2-9]\\d|\\d\\d\\d+) rows/.test(document.body.innerText)", timeout=60_000)
    page.evaluate(COUNTER)
    rows0, t0 = rows_shown(page), time.perf_counter()
    server_ms = []
    while time.perf_counter() - t0 < 10:
        m = page.evaluate("(document.body.textContent.match(/this redraw took (\\d+) ms/) || [0, -1])[1]")
        server_ms.append(int(m))
        page.wait_for_timeout(250)
    dt = time.perf_counter() - t0
    timings["live_refreshes_per_s"] = page.evaluate("window.__refreshes") / dt  # panel updates seen in the page
    server_ms = [m for m in server_ms if m >= 0]
    timings["server_redraw_ms_median"] = sorted(server_ms)[len(server_ms) // 2] if server_ms else None
    redraws, changes = page.evaluate("[window.__redraws, window.__changes]")
    timings["chart_redraws_per_s"] = redraws / dt  # Plotly redraws: only when a refresh brings new steps
    timings["chart_updates_per_s"] = changes / dt
    timings["steps_per_s_during_measurement"] = (rows_shown(page) - rows0) / dt
    page.screenshot(path=str(ART / "sparsify-running.png"), full_page=True)
    page.get_by_test_id("stMainBlockContainer").get_by_role("button", name="Stop", exact=True).click()
    page.wait_for_function("document.body.innerText.includes(': stopped')", timeout=30_000)
    no_exception(page)
    assert any(p.is_dir() for p in runs.iterdir())
    page.screenshot(path=str(ART / "sparsify-stopped.png"), full_page=True)

    # a corrupt upload: a clear error, no new run, no exception
    before = sorted(p.name for p in runs.iterdir())
    page.locator('[data-testid="stSelectbox"]').filter(has_text="Checkpoint").click()
    page.get_by_role("option", name="upload a .safetensors…").click()
    page.wait_for_selector('input[type="file"]', state="attached", timeout=30_000)
    page.locator('input[type="file"]').set_input_files(
        files=[{"name": "broken.safetensors", "mimeType": "application/octet-stream", "buffer": b"\x00garbage" * 10}])
    page.wait_for_function("document.body.innerText.includes('broken.safetensors cannot be used as a')", timeout=30_000)
    no_exception(page)
    assert sorted(p.name for p in runs.iterdir() if p.name != "uploads") == before
    assert not list((runs / "uploads").glob("*.safetensors"))  # the bad file was not kept
    page.screenshot(path=str(ART / "sparsify-bad-upload.png"), full_page=True)

    for link, title in PAGES:
        page.locator('[data-testid="stSidebarNav"] a').filter(has_text=link).first.click()
        page.wait_for_function(f"[...document.querySelectorAll('h1')].some(h => h.innerText.startsWith({json.dumps(title)}))",
                               timeout=30_000)
        wait_idle(page, 60)
        no_exception(page)
        if link in ("Playground", "Runs", "Trajectories", "Sparsify", "Candidate paths"):
            page.wait_for_selector(".js-plotly-plot", timeout=30_000)
        page.screenshot(path=str(ART / f"page-{link.split()[0].lower()}.png"), full_page=True)
    ctx.close()
    timings["load_average_1min"] = os.getloadavg()[0]
    (ART / "browser-timings.json").write_text(json.dumps(timings, indent=2))
    print("\nbrowser timings:", json.dumps(timings))
    # Speed targets (first paint < 5 s / < 2 s, live updates >= 2 Hz) are measured and written to
    # browser-timings.json, not asserted: on 2 shared cores the numbers follow the machine's load. The test
    # fails only when a page does not paint at all in reasonable time or live updates have clearly stalled.
    assert timings["first_visit_s"] < 30 and timings["new_tab_s"] < 30, timings
    assert timings["live_refreshes_per_s"] >= 0.3, timings
