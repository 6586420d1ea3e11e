"""The explorer works without the internet: opening it makes no request to any host but the server's.

Real headless Chromium (Playwright) against `streamlit run app/main.py`, started by tools/appdriver.py as in
tests/test_browser.py; skipped only when /usr/bin/chromium is missing.
"""

import os
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tools.appdriver import CHROMIUM, chromium, first_paint, wait_idle
from tools.appdriver import server as app_server

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LOCAL = {"127.0.0.1", "localhost"}


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} not installed (make browser)")
    with app_server(tmp_path_factory.mktemp("offline-runs"), tmp_path_factory.mktemp("log") / "server.log") as u:
        yield u


def test_first_page_stays_local(url):
    outside = []
    with chromium() as browser:
        ctx = browser.new_context(viewport={"width": 1400, "height": 1600})
        # every request of the context (pages, frames, workers), data: and blob: URLs have no host
        ctx.on("request", lambda r: urlsplit(r.url).hostname not in LOCAL | {None} and outside.append(r.url))
        page = ctx.new_page()
        first_paint(page, url)
        wait_idle(page, 60)
        page.wait_for_timeout(2000)  # late requests: favicon, fonts, icons
        ctx.close()
    # e.g. a `:material/…:` page_icon: Streamlit's page turns it into a favicon on fonts.gstatic.com
    assert not outside, f"requests that left {urlsplit(url).hostname}: {sorted(set(outside))}"
