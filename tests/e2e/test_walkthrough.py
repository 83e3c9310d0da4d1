"""A real browser walks every page on the default model (no error or traceback anywhere),
measures the removal sweep from the Attention vs MLP page, toggles layers in the
playground, exports the pruning plan and imports it back, and takes a screenshot of each
page: into docs/screenshots/ (the README shows them) only when LAYERLAB_SCREENSHOTS=1
(`make screenshots`), else into a temporary directory, so a test run leaves tracked files alone."""
import functools
import json
import os
import re
import tempfile
from pathlib import Path

import pytest
from playwright.sync_api import expect

from test_browser_playground import EXACT, LOAD_MS, STEP_MS, metric, pressed, share_link

ROOT = Path(__file__).resolve().parents[2]
DOCS_SHOTS = ROOT / "docs" / "screenshots"
VIEW = "seq_len=64&max_windows=4"
SWEEP_MS = 600_000
# page title in the navigation, and a text that only shows once the page has fully rendered
PAGES = [
    ("overview", "Overview", "Corpus perplexity"),
    ("sublayers", "Attention vs MLP", "Does similarity predict damage on this model?"),
    ("similarity", "Hidden-state similarity", "Spearman(Block Influence, perplexity with the block removed)"),
    ("sparsity", "Activation sparsity", "Density per token"),
    ("logit_lens", "Logit lens & early exit", "Per-window tolerance exit"),
]


def no_failure(page) -> None:
    expect(page.get_by_text("Page not found")).to_have_count(0)
    assert page.locator('[data-testid="stException"]').count() == 0
    errors = page.locator('[data-testid="stAlertContentError"]').all_inner_texts()
    assert not errors, errors


def settle(page) -> None:
    """Wait until the script has finished running (no 'running' status widget)."""
    expect(page.locator('[data-testid="stStatusWidget"]')).to_have_count(0, timeout=SWEEP_MS)


@functools.cache
def shots() -> Path:
    """Where screenshots go: docs/screenshots/ with LAYERLAB_SCREENSHOTS=1, else a fresh
    temporary directory (one per test process)."""
    if os.environ.get("LAYERLAB_SCREENSHOTS") == "1":
        DOCS_SHOTS.mkdir(parents=True, exist_ok=True)
        return DOCS_SHOTS
    return Path(tempfile.mkdtemp(prefix="layerlab-screenshots-"))


def shoot(page, name: str) -> None:
    page.locator('[data-testid="stMain"]').evaluate("main => main.scrollTo(0, 0)")
    page.evaluate("window.scrollTo(0, 0)")
    page.wait_for_timeout(1500)  # plotly draws after the element appears
    page.screenshot(path=str(shots() / f"{name}.png"))
    assert (shots() / f"{name}.png").stat().st_size > 10_000


@pytest.fixture(scope="module")
def page(app_url, browser):
    context = browser.new_context(viewport={"width": 1440, "height": 1100}, accept_downloads=True)
    page = context.new_page()
    page.goto(f"{app_url}/?{VIEW}")  # the default page is served at /, not /overview
    expect(metric(page, "Layers")).to_have_text("30", timeout=LOAD_MS)
    yield page
    context.close()


def nav(page, title: str) -> None:
    page.locator('[data-testid="stSidebarNav"]').get_by_text(title, exact=True).click()


@pytest.mark.parametrize("name, title, ready", PAGES, ids=[p[0] for p in PAGES])
def test_every_page_renders_on_the_default_model(page, name, title, ready):
    if name != "overview":
        nav(page, title)
    path = "" if name == "overview" else name
    expect(page).to_have_url(re.compile(f"/{path}\\?.*seq_len=64"), timeout=STEP_MS)
    if name == "sublayers":
        button = page.get_by_role("button", name=re.compile("Measure removal cost"))
        expect(button.or_(page.get_by_text(ready))).to_be_visible(timeout=LOAD_MS)
        if button.is_visible():
            button.click()
    expect(page.get_by_text(ready, exact=False).first).to_be_visible(timeout=SWEEP_MS)
    settle(page)
    no_failure(page)
    charts = page.locator('[data-testid="stPlotlyChart"]').count()
    assert charts >= (0 if name == "overview" else 2)
    # every chart drew data: plotly computed points for each chart's traces (calcdata: one
    # list per trace; x/y/z themselves arrive base64-encoded, so their length says nothing)
    points = page.evaluate("""() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(
        el => (el.calcdata || []).map(trace => trace.filter(p => p && ([p.x, p.y, p.s].some(
            v => typeof v === "number" && isFinite(v)) || (p.z && p.z.length > 0))).length))""")
    assert len(points) == charts and all(traces and max(traces) > 0 for traces in points), points
    shoot(page, name)


def test_playground_toggles_export_and_import_a_plan(page, tmp_path):
    nav(page, "Layer playground")
    expect(metric(page, "Pruned perplexity")).to_have_text(re.compile(r"^\d+\.\d{3}$"), timeout=LOAD_MS)
    full = metric(page, "Full perplexity").inner_text()
    blocks = page.get_by_role("toolbar", name="Remove blocks")
    for layer in ("12", "20"):
        blocks.get_by_role("button", name=layer, exact=True).click()
        settle(page)
    page.get_by_role("toolbar", name="Remove MLP sublayers").get_by_role("button", name="5", exact=True).click()
    expect(page.get_by_text(re.compile(r"Removed blocks 12, 20; MLP sublayers 5"))).to_be_visible(timeout=STEP_MS)
    share_link(page, "rm_mlp=5")  # drawn after the metrics, in the same fragment run
    expect(page.get_by_text(EXACT)).to_be_visible(timeout=STEP_MS)  # the number is final, not an estimate
    settle(page)
    pruned = metric(page, "Pruned perplexity").inner_text()
    assert pruned != full
    no_failure(page)
    shoot(page, "playground")

    with page.expect_download(timeout=STEP_MS) as download:
        page.get_by_role("button", name="Download pruning plan (JSON)").click()
    path = tmp_path / "plan.json"
    download.value.save_as(path)
    plan = json.loads(path.read_text())
    assert plan["schema"] == "layer-lab/pruning-plan"
    assert plan["remove"] == {"blocks": [12, 20], "attn": [], "mlp": [5]}
    assert f"{plan['evaluation']['perplexity_pruned']:.3f}" == pruned
    assert f"{plan['evaluation']['perplexity_full']:.3f}" == full

    for toolbar, layer in (("Remove blocks", "12"), ("Remove blocks", "20"), ("Remove MLP sublayers", "5")):
        page.get_by_role("toolbar", name=toolbar).get_by_role("button", name=layer, exact=True).click()
        settle(page)
    expect(page.get_by_text("Nothing removed: this is the full model.")).to_be_visible(timeout=STEP_MS)
    expect(metric(page, "Pruned perplexity")).to_have_text(full, timeout=STEP_MS)

    page.get_by_text("Import a pruning plan").click()
    importer = page.get_by_test_id("stExpander").filter(has_text="Import a pruning plan")  # not the Tasks panel's
    importer.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(path))
    page.get_by_role("button", name="Apply this plan's removals").click()
    expect(metric(page, "Pruned perplexity")).to_have_text(pruned, timeout=STEP_MS)
    assert pressed(page, "Remove blocks") == ["12", "20"]
    assert pressed(page, "Remove MLP sublayers") == ["5"]
    no_failure(page)
