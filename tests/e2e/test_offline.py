"""The app works offline: opening the overview and a deep link to the playground, the
browser requests nothing outside the server (no favicon from a font CDN), gets no 404
and logs no console error."""
import re
from urllib.parse import urlsplit

from playwright.sync_api import expect

from test_browser_playground import LOAD_MS, metric


def watch(page) -> dict[str, list[str]]:
    """Every request leaving the server's host, every 4xx/5xx response and every console
    error of `page`, as they happen."""
    seen = {"outside": [], "failed": [], "console": []}
    page.on("request", lambda r: seen["outside"].append(r.url)
            if urlsplit(r.url).scheme not in ("data", "blob") and urlsplit(r.url).hostname != "127.0.0.1" else None)
    page.on("response", lambda r: seen["failed"].append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.on("console", lambda m: seen["console"].append(m.text) if m.type == "error" else None)
    return seen


def test_overview_and_deep_link_stay_on_the_server(app_url, browser):
    assert urlsplit(app_url).hostname == "127.0.0.1"
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    seen = watch(page)
    page.goto(f"{app_url}/?seq_len=16&max_windows=2")
    expect(metric(page, "Layers")).to_have_text("30", timeout=LOAD_MS)
    page.goto(f"{app_url}/playground?seq_len=16&max_windows=2")
    expect(metric(page, "Pruned perplexity")).to_have_text(re.compile(r"^\d+\.\d{3}$"), timeout=LOAD_MS)
    page.wait_for_timeout(2000)  # the favicon and anything else the last render asks for
    favicon = page.locator('link[rel="shortcut icon"]').get_attribute("href")
    context.close()
    assert seen["outside"] == []
    assert seen["failed"] == []
    assert seen["console"] == []
    assert favicon.startswith("data:image/svg+xml")  # the page icon, inlined
