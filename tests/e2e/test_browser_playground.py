"""In a real browser against `streamlit run`: toggling layers in the playground changes the
perplexity shown, and the copied link, opened in a fresh browser context (a new session
with no shared state), restores the same toggles, prompt and numbers."""
import re

from playwright.sync_api import expect

LOAD_MS = 300_000  # first load: model, analysis and clean residuals (seq_len 32, 2 windows)
STEP_MS = 120_000
EXACT = re.compile(r"exact over all \d+ windows")  # the playground's number is final, not an estimate
EXACT_VALUE = re.compile(r"^\d+\.\d{3}$")  # an estimate renders as "~12.345" (with an "estimate" badge)


def metric(page, label: str):
    return page.locator('[data-testid="stMetric"]').filter(has_text=label).locator('[data-testid="stMetricValue"]')


def pressed(page, toolbar: str) -> list[str]:
    bar = page.get_by_role("toolbar", name=toolbar)
    return bar.locator('button[aria-pressed="true"]').all_inner_texts()


def share_link(page, *parts: str) -> str:
    code = page.locator('[data-testid="stCode"]').filter(has_text="/playground?")
    for part in parts:
        expect(code).to_contain_text(part, timeout=STEP_MS)
    return code.inner_text().strip()


def test_toggle_changes_perplexity_and_link_restores_view(app_url, browser):
    first = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = first.new_page()
    page.goto(f"{app_url}/playground?seq_len=32&max_windows=2")
    expect(metric(page, "Pruned perplexity")).to_have_text(re.compile(r"^\d+\.\d{3}$"), timeout=LOAD_MS)
    full = metric(page, "Full perplexity").inner_text()
    assert metric(page, "Pruned perplexity").inner_text() == full
    expect(page.get_by_text("Nothing removed: this is the full model.")).to_be_visible()

    page.get_by_role("toolbar", name="Remove blocks").get_by_role("button", name="3", exact=True).click()
    expect(metric(page, "Pruned perplexity")).not_to_have_text(full, timeout=STEP_MS)
    expect(metric(page, "Pruned perplexity")).to_have_text(EXACT_VALUE, timeout=STEP_MS)
    after_block = metric(page, "Pruned perplexity").inner_text()
    page.get_by_role("toolbar", name="Remove attention sublayers").get_by_role("button", name="7", exact=True).click()
    expect(metric(page, "Pruned perplexity")).not_to_have_text(after_block, timeout=STEP_MS)
    link = share_link(page, "rm_blocks=3", "rm_attn=7")
    expect(page.get_by_text(EXACT)).to_be_visible(timeout=STEP_MS)
    expect(metric(page, "Pruned perplexity")).to_have_text(EXACT_VALUE, timeout=STEP_MS)
    pruned = metric(page, "Pruned perplexity").inner_text()
    assert float(pruned) != float(full) and float(pruned) > 0
    assert metric(page, "Full perplexity").inner_text() == full
    expect(page).to_have_url(re.compile(r"rm_blocks=3.*rm_attn=7"), timeout=STEP_MS)  # the address bar too
    assert "seq_len=32" in link and "max_windows=2" in link and link.startswith(app_url)
    first.close()

    second = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = second.new_page()
    page.goto(link)
    expect(metric(page, "Pruned perplexity")).to_have_text(pruned, timeout=LOAD_MS)
    assert metric(page, "Full perplexity").inner_text() == full
    assert pressed(page, "Remove blocks") == ["3"]
    assert pressed(page, "Remove attention sublayers") == ["7"]
    assert pressed(page, "Remove MLP sublayers") == []
    assert share_link(page, "rm_blocks=3") == link
    second.close()
