"""Issue 29 (10): a cold first visit at the default settings, timed in a real browser.

Each page is the first visit on a freshly started server with an empty result cache (the
converted model is there, as after `make model`): the overview's perplexity, the
playground's first and exact number, and the logit lens's corpus metrics; then a second
session opens the playground on the warm server. The figures are printed (README,
"Cold start"); timing is never a pass/fail condition, so this is a release measurement
(`make coldstart`, marked soak), to be run on a quiet machine. It fails only when a
number never shows.
"""
import re
import time

import pytest
from playwright.sync_api import expect

from conftest import serve
from test_browser_playground import EXACT, metric

COLD_MS = 900_000
NUMBER = re.compile(r"\d+\.\d{3}")

pytestmark = pytest.mark.soak


def visit(browser, url: str):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(url, wait_until="commit")
    return context, page


def since(start: float) -> str:
    return f"{time.monotonic() - start:.1f} s"


def test_cold_first_visits(tmp_path_factory, browser):
    figures = {}
    for name, path, label in (("overview perplexity", "", "Perplexity"),
                              ("logit lens metrics", "/logit_lens", "Cross-entropy after the last block")):
        server = serve(tmp_path_factory)
        url = next(server)
        try:
            start = time.monotonic()
            context, page = visit(browser, url + path)
            expect(metric(page, label)).to_have_text(re.compile(r"\d+\.\d{3}"), timeout=COLD_MS)
            figures[name] = since(start)
            context.close()
        finally:
            server.close()
    server = serve(tmp_path_factory)
    url = next(server)
    try:
        start = time.monotonic()
        context, page = visit(browser, f"{url}/playground")
        expect(metric(page, "Pruned perplexity")).to_have_text(NUMBER, timeout=COLD_MS)
        figures["playground first number"] = since(start)
        expect(page.get_by_text(EXACT)).to_be_visible(timeout=COLD_MS)
        figures["playground exact number"] = since(start)
        context.close()
        start = time.monotonic()
        context, page = visit(browser, f"{url}/playground")
        expect(metric(page, "Pruned perplexity")).to_have_text(NUMBER, timeout=COLD_MS)
        figures["a second session's first number (warm server)"] = since(start)
        context.close()
    finally:
        server.close()
    print("\ncold first visit, default settings:")
    for name, value in figures.items():
        print(f"  {name:48s} {value}")
