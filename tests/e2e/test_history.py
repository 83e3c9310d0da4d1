"""In a real browser: one page change adds exactly one history entry, and that entry keeps
the view's query (Streamlit drops the query on a page change and the app writes it back;
that used to add a second entry); Back returns to the previous page with its query. A
link naming a local model shows, on every page and above the title, that the numbers
are for another model."""
import re

from playwright.sync_api import expect

from test_browser_playground import LOAD_MS, STEP_MS, metric

VIEW = "seq_len=32&max_windows=1"
MAIN_H1 = "[data-testid=\"stMain\"] h1"
QUERY = re.compile(r"\?model=default&corpus=builtin%3Aall&seq_len=32&max_windows=1&eval=holdout$")


def settle(page) -> None:
    expect(page.locator('[data-testid="stStatusWidget"]')).to_have_count(0, timeout=LOAD_MS)
    page.wait_for_timeout(1500)  # let the last messages (query, page URL) reach the browser


def go(page, nav: str, heading: str, path: str) -> None:
    page.locator('[data-testid="stSidebarNav"]').get_by_text(nav, exact=True).click()
    expect(page).to_have_url(re.compile(f"/{path}\\?"), timeout=STEP_MS)
    expect(page.locator(MAIN_H1).filter(has_text=heading)).to_be_visible(timeout=LOAD_MS)
    settle(page)


def history_length(page) -> int:
    return page.evaluate("window.history.length")


def test_one_page_change_is_one_history_entry_with_the_query(app_url, browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(f"{app_url}/?{VIEW}")
    expect(metric(page, "Perplexity")).to_be_visible(timeout=LOAD_MS)
    settle(page)
    expect(page).to_have_url(QUERY)
    start = history_length(page)
    visits = [("Hidden-state similarity", "Hidden-state similarity", "similarity"),
              ("Activation sparsity", "Activation sparsity", "sparsity"), ("Overview", "Layer Lab", "")]
    for i, (nav, heading, path) in enumerate(visits, start=1):
        go(page, nav, heading, path)
        assert history_length(page) == start + i, nav
        assert re.search(f"/{path}" + QUERY.pattern, page.url), page.url
    for _, heading, path in reversed(visits[:-1]):  # Back: the previous page, with its query
        page.go_back()
        expect(page).to_have_url(re.compile(f"/{path}" + QUERY.pattern), timeout=STEP_MS)
        expect(page.locator(MAIN_H1).filter(has_text=heading)).to_be_visible(timeout=LOAD_MS)
        settle(page)
        assert history_length(page) == start + len(visits)
    context.close()


def test_link_to_a_local_model_warns_above_every_page(app_url, browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(f"{app_url}/?model=/home/someone/my-model&{VIEW}")
    expect(metric(page, "Perplexity")).to_be_visible(timeout=LOAD_MS)
    for title, path in (("Layer Lab", None), ("Hidden-state similarity", "similarity")):
        if path:
            go(page, title, title, path)
        banner = page.locator('[data-testid="stAlert"]').filter(has_text="numbers here are for another model")
        expect(banner).to_be_visible(timeout=STEP_MS)
        expect(banner).to_contain_text("/home/someone/my-model")
        expect(banner).to_contain_text("SmolLM2-135M-Instruct")
        heading = page.locator(MAIN_H1).filter(has_text=title).first
        assert banner.bounding_box()["y"] < heading.bounding_box()["y"]  # above the page's title
        assert banner.bounding_box()["y"] < 400  # in the first screen, not below the fold
    context.close()
