"""Real headless Chromium (Playwright) against `streamlit run app/main.py`: first paint and time to interactive,
a press before the engine has loaded, a live run, a corrupt upload, every page.

Skipped only when /usr/bin/chromium is missing. Screenshots go to tests/artifacts/ (gitignored); the measured
times and chart update rate are printed and written to tests/artifacts/browser-timings.json.
"""

import json
import os
from pathlib import Path

import pytest

from tools.appdriver import CHROMIUM, chromium, measure_live, start_sparsify, time_to_interactive, wait_idle
from tools.appdriver import server as app_server

ROOT = Path(__file__).resolve().parent.parent

ART = ROOT / "tests" / "artifacts"
PAGES = [("Candidate paths", "Candidate paths"), ("Trajectories", "Weight trajectories"),
         ("Damage & recovery", "Damage"), ("Two tasks", "Two tasks"), ("Playground", "Playground"),
         ("Theory", "Theory"), ("Runs", "Runs on disk"), ("Task sequence", "Task sequence"), ("Sparsify", "Sparsify")]

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} not installed (make browser)")
    runs = tmp_path_factory.mktemp("browser-runs")
    with app_server(runs, tmp_path_factory.mktemp("log") / "server.log") as url:  # fails on the pandas import race
        yield url, runs


@pytest.fixture(scope="module")
def browser(server):
    with chromium() as b:
        yield b


def no_exception(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0, page.locator('[data-testid="stException"]').first.inner_text()


def test_browser_end_to_end(server, browser):
    url, runs = server
    ART.mkdir(parents=True, exist_ok=True)
    timings = {}
    ctx = browser.new_context(viewport={"width": 1400, "height": 1600})
    page = ctx.new_page()
    visit = time_to_interactive(page, url)  # right after server start: the pandas import race
    timings.update(first_visit_s=visit["first_paint_s"], first_visit_tti_s=visit["tti_s"])
    assert page.locator("h1").first.inner_text().startswith("Sparsify")
    no_exception(page)
    wait_idle(page, 60)  # the first visit's script run is over; the engine is still loading behind it
    tab = ctx.new_page()
    again = time_to_interactive(tab, url)
    timings.update(new_tab_s=again["first_paint_s"], new_tab_tti_s=again["tti_s"])
    no_exception(tab)
    tab.close()

    # a live lenet60 run, most likely pressed before the engine has loaded: the press waits under a status line
    # ("Loading the engine…", recorded when seen), then starts; watch the charts update, stop
    page.evaluate("""() => { window.__loading = false; new MutationObserver(() => {
        if (document.body.innerText.includes('Loading the engine')) window.__loading = true; })
        .observe(document.body, {childList: true, subtree: true, characterData: true}); }""")
    start_sparsify(page, "lenet60-fashion-mnist")
    timings["press_waited_for_the_engine"] = page.evaluate("window.__loading")
    timings.update(measure_live(page, seconds=10))
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
        if link != "Theory":  # the saved runs' charts: drawn by the rerun the browser asks for (page.after_paint)
            page.wait_for_selector(".js-plotly-plot", timeout=30_000)
            wait_idle(page, 60)
            no_exception(page)
        page.screenshot(path=str(ART / f"page-{link.split()[0].lower()}.png"), full_page=True)
    ctx.close()
    timings["load_average_1min"] = os.getloadavg()[0]
    (ART / "browser-timings.json").write_text(json.dumps(timings, indent=2))
    print("\nbrowser timings:", json.dumps(timings))
    # Speed targets (time to interactive < 5 s / < 2 s, live updates >= 2 Hz) are measured and written to
    # browser-timings.json, not asserted: on 2 shared cores the numbers follow the machine's load. The test
    # fails only when a page does not paint at all in reasonable time or live updates have clearly stalled.
    assert timings["first_visit_tti_s"] < 30 and timings["new_tab_tti_s"] < 30, timings
    assert timings["live_refreshes_per_s"] >= 0.3, timings
