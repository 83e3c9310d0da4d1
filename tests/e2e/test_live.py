"""Issues 17 and 12 in a real browser: the playground answers a toggle within a second at
the default settings (builtin:all, seq_len 128, every window) and close to its backend
time at 4 windows x 64 tokens, the exact number follows, the
share link equals the state after a preset, and each page's first content time on a warm
start. Figures are printed (run with -s to see them), never asserted: timing does not
decide a test (the budgets: 1.0 s per toggle at the default settings, backend + 0.3 s at
4 x 64, 3 s per page)."""
import re
import statistics
import time

import pytest
from playwright.sync_api import expect

from test_browser_playground import EXACT, LOAD_MS, STEP_MS, metric, pressed, share_link

DEFAULT_WINDOWS = 36  # builtin:all at seq_len 128 on the default model: 45 windows, every 5th held out
FIRST = re.compile(r"first estimate after (\d+\.\d+) s")
EXACT_AFTER = re.compile(r"exact after (\d+\.\d+) s")


def caption_text(page) -> str:
    return " ".join(page.locator('[data-testid="stCaptionContainer"]').all_inner_texts())


def settle(page) -> None:
    """The previous run finished: its number is exact and the script is idle."""
    expect(page.get_by_text(EXACT)).to_be_visible(timeout=STEP_MS)
    expect(page.locator('[data-testid="stStatusWidget"]')).to_have_count(0, timeout=STEP_MS)


WATCH = """before => {
  const watch = {clicked: null, changed: null, exact: null};
  window.__layerlab_watch = watch;
  document.addEventListener("pointerdown", () => { if (watch.clicked === null) watch.clicked = performance.now(); },
                            {capture: true, once: true});
  const value = () => {
    const box = [...document.querySelectorAll('[data-testid="stMetric"]')].find(m => m.innerText.includes("Pruned perplexity"));
    const v = box && box.querySelector('[data-testid="stMetricValue"]');
    return v ? v.innerText.trim() : null;
  };
  const observer = new MutationObserver(() => {
    const now = value();
    if (watch.clicked !== null && now !== null && now !== before) {
      if (watch.changed === null) watch.changed = performance.now();
      if (!now.startsWith("~")) { watch.exact = performance.now(); observer.disconnect(); }  // an estimate reads "~12.345"
    }
  });
  observer.observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def screen_seconds(page, until: str = "changed") -> float:
    """Seconds from the pointer press to the DOM change that put the new number on screen
    (until="exact": the exact number), on the page's own clock (a MutationObserver):
    Playwright's polling of an assertion (100, 250, 500, 1000 ms steps) would add up to
    half a second."""
    watch = page.evaluate("window.__layerlab_watch")
    return (watch[until] - watch["clicked"]) / 1000


def toggle(page, toolbar: str, layer: int) -> None:
    page.get_by_role("toolbar", name=toolbar).get_by_role("button", name=str(layer), exact=True).click()


VIEWS = {  # issue 17: the default settings; issue 12: 4 windows x 64 tokens
    "default settings (36 calibration windows x 128)": ("", DEFAULT_WINDOWS),
    "4 windows x 64": ("?seq_len=64&max_windows=4", 4),
}


@pytest.mark.parametrize("view", list(VIEWS))
def test_toggle_latency_and_exact_number(app_url, browser, view):
    query, n_windows = VIEWS[view]
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(f"{app_url}/playground{query}")
    expect(metric(page, "Pruned perplexity")).to_have_text(re.compile(r"^\d+\.\d{3}$"), timeout=LOAD_MS)
    assert f"Corpus: {n_windows} windows" in caption_text(page)
    clicks = [("Remove blocks", 20), ("Remove attention sublayers", 9), ("Remove MLP sublayers", 25),
              ("Remove blocks", 26), ("Remove attention sublayers", 17), ("Remove MLP sublayers", 12),
              ("Remove blocks", 14), ("Remove attention sublayers", 3), ("Remove MLP sublayers", 28),
              ("Remove blocks", 8)]
    browser_s, polled_s, backend_s, exact_s, exact_backend_s = [], [], [], [], []
    for toolbar, layer in clicks:
        settle(page)
        before = metric(page, "Pruned perplexity").inner_text()
        page.evaluate(WATCH, before)
        start = time.perf_counter()
        toggle(page, toolbar, layer)
        expect(metric(page, "Pruned perplexity")).not_to_have_text(before, timeout=STEP_MS)
        polled_s.append(time.perf_counter() - start)
        page.wait_for_function("window.__layerlab_watch.changed !== null", timeout=STEP_MS)
        browser_s.append(screen_seconds(page))
        match = FIRST.search(caption_text(page))
        backend_s.append(float(match.group(1)) if match else float("nan"))
        page.wait_for_function("window.__layerlab_watch.exact !== null", timeout=STEP_MS)
        exact_s.append(screen_seconds(page, "exact"))
        expect(page.get_by_text(EXACT)).to_be_visible(timeout=STEP_MS)
        match = EXACT_AFTER.search(caption_text(page))
        exact_backend_s.append(float(match.group(1)) if match else float("nan"))
    expect(page.get_by_text(EXACT)).to_be_visible(timeout=STEP_MS)  # the exact number follows
    median_browser, median_backend = statistics.median(browser_s), statistics.median(backend_s)
    print(f"\ntoggle latency at {view}: browser median {median_browser:.2f} s (all: "
          f"{', '.join(f'{t:.2f}' for t in browser_s)}), backend median {median_backend:.2f} s, "
          f"browser - backend {median_browser - median_backend:.2f} s; as Playwright's polling sees it "
          f"{statistics.median(polled_s):.2f} s")
    print(f"click to exact number at {view}: browser median {statistics.median(exact_s):.2f} s (all: "
          f"{', '.join(f'{t:.2f}' for t in exact_s)}), backend median {statistics.median(exact_backend_s):.2f} s")
    assert all(0 < t <= e for t, e in zip(browser_s, exact_s))
    assert len(browser_s) == len(clicks) and all(0 < t <= p for t, p in zip(browser_s, polled_s))  # printed, not asserted
    context.close()


def test_share_link_equals_the_state_after_a_preset(app_url, browser):
    first = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = first.new_page()
    page.goto(f"{app_url}/playground?seq_len=32&max_windows=2&rm_attn=5")
    expect(metric(page, "Pruned perplexity")).to_have_text(re.compile(r"^\d+\.\d{3}$"), timeout=LOAD_MS)
    assert pressed(page, "Remove attention sublayers") == ["5"]
    page.get_by_text("Presets from the analyses").click()
    page.get_by_role("button", name="Apply preset").click()  # default method lowest_block_influence, k = 1
    share_link(page, "rm_blocks=")  # the run for the preset's state has drawn its numbers
    expect(page.get_by_text(EXACT)).to_be_visible(timeout=STEP_MS)
    blocks = pressed(page, "Remove blocks")
    assert len(blocks) == 1 and pressed(page, "Remove attention sublayers") == []
    link = share_link(page, f"rm_blocks={blocks[0]}")
    assert "rm_attn" not in link
    expect(page).to_have_url(re.compile(f"rm_blocks={blocks[0]}"), timeout=STEP_MS)
    pruned = metric(page, "Pruned perplexity").inner_text()
    first.close()

    second = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = second.new_page()
    page.goto(link)
    expect(metric(page, "Pruned perplexity")).to_have_text(pruned, timeout=LOAD_MS)
    # the pills draw their pressed state a render after their value arrives: wait for it (a
    # loaded machine once read it in between), then compare exactly
    expect(page.get_by_role("toolbar", name="Remove blocks").locator('button[aria-pressed="true"]')).to_have_text(
        blocks, timeout=STEP_MS)
    assert pressed(page, "Remove blocks") == blocks and pressed(page, "Remove attention sublayers") == []
    second.close()


PAGES = [("", "Corpus perplexity"), ("similarity", "Block Influence"), ("sublayers", "Joint ranking"),
         ("sparsity", "Dead neurons"), ("logit_lens", "Over the whole corpus"), ("playground", "Pruned perplexity")]


def test_first_content_per_page_on_a_warm_start(app_url, browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    for path, marker in PAGES:  # warm: every analysis at the default settings computed once
        page.goto(f"{app_url}/{path}")
        expect(page.get_by_text(marker).first).to_be_visible(timeout=LOAD_MS)
    times = {}
    for path, marker in PAGES:
        fresh = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
        start = time.perf_counter()
        fresh.goto(f"{app_url}/{path}")
        expect(fresh.get_by_text(marker).first).to_be_visible(timeout=LOAD_MS)
        times[path or "overview"] = time.perf_counter() - start
        fresh.context.close()
    print("\nfirst content on a warm start (s): " + ", ".join(f"{k} {v:.2f}" for k, v in times.items()))
    assert set(times) == {path or "overview" for path, _ in PAGES}  # timing is printed, not asserted
    context.close()
