"""In a real browser: the removal sweep started on the Attention vs MLP page runs as a
background job. After a page change and after a reload it is still listed in the
sidebar's jobs area (with progress and a Cancel button), and when it is done the page
shows the measured costs without measuring again."""
import re
import time

from playwright.sync_api import expect

from test_browser_playground import LOAD_MS, STEP_MS

VIEW = "seq_len=48&max_windows=6"
SWEEP_MS = 900_000


def jobs_area(page):
    return page.locator('[data-testid="stSidebar"]').get_by_text("Background jobs")


def test_sweep_job_survives_page_change_and_reload(app_url, browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(f"{app_url}/sublayers?{VIEW}")
    button = page.get_by_role("button", name=re.compile("Measure removal cost"))
    expect(button).to_be_visible(timeout=LOAD_MS)
    started = time.monotonic()
    button.click()
    sidebar = page.locator('[data-testid="stSidebar"]')
    expect(sidebar.get_by_text(re.compile(r"Removal sweep \(90 removals\)"))).to_be_visible(timeout=STEP_MS)

    page.locator('[data-testid="stSidebarNav"]').get_by_text("Hidden-state similarity", exact=True).click()
    expect(page).to_have_url(re.compile(r"/similarity\?"), timeout=STEP_MS)
    expect(jobs_area(page)).to_be_visible(timeout=STEP_MS)  # still running after the page change
    expect(sidebar.get_by_role("button", name="Cancel")).to_be_visible()
    page.reload()
    expect(jobs_area(page)).to_be_visible(timeout=LOAD_MS)  # ... and after a reload
    expect(sidebar.get_by_text(re.compile(r"\d+%, (about .* left|estimating time left)|queued, position"))).to_be_visible(timeout=STEP_MS)
    print(f"sweep still running {time.monotonic() - started:.0f} s after it was started, across a page change "
          "and a reload")

    page.goto(f"{app_url}/sublayers?{VIEW}")
    expect(page.get_by_text("Does similarity predict damage on this model?")).to_be_visible(timeout=SWEEP_MS)
    print(f"sweep done {time.monotonic() - started:.0f} s after it was started (6 windows x 49 tokens)")
    expect(page.get_by_role("button", name=re.compile("Measure removal cost"))).to_have_count(0)
    context.close()
