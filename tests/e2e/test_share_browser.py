"""Results that travel, in a real browser:

- the HTML report downloaded from the app opens from file:// in an offline browser, with
  no console error and no request, and its figures draw and answer a hover;
- the CLI's report.json, uploaded into a fresh app on a server that may load no model at
  all, opens every analysis page, and its link reopens it;
- the default model compared with its 3-block pruned checkpoint (made by `plan` and
  `apply` here) is aligned by the plan's kept-layer map, and the comparison's link
  reopens it (the screenshots compare.png and html_report.png are taken here, see
  test_walkthrough.shots).
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from playwright.sync_api import expect

from test_browser_playground import LOAD_MS, STEP_MS, metric
from test_walkthrough import nav, no_failure, settle, shoot, shots

ROOT = Path(__file__).resolve().parents[2]
VIEW = "seq_len=64&max_windows=2"
BANNER = "Read-only view from a report file"
PAGES = [("Overview", "Corpus perplexity", 0), ("Hidden-state similarity", "Layer map", 4),
         ("Attention vs MLP", "Measured removal cost (the ground truth)", 1),
         ("Activation sparsity", "Firing frequency of each neuron", 3),
         ("Logit lens & early exit", "Per-sequence oracle", 4)]


def cli(tmp_path, *args) -> str:
    """Run `python -m analysis ...` on its own cache (the converted models linked in)."""
    cache = tmp_path / "cli-cache"
    if not cache.exists():
        cache.mkdir()
        if (ROOT / "cache" / "models").exists():
            os.symlink(ROOT / "cache" / "models", cache / "models")
    proc = subprocess.run([sys.executable, "-m", "analysis", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=1800, env=dict(os.environ, LAYERLAB_CACHE_DIR=str(cache)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("share")


@pytest.fixture(scope="module")
def cli_report(workdir) -> Path:
    out = workdir / "report.json"
    cli(workdir, "report", "--model", "default", "--device", "cpu", "--corpus", "builtin:all", "--seq-len", "64",
        "--max-windows", "2", "--skip-removal", "--out", str(out))
    return out


@pytest.fixture(scope="module")
def checkpoint(workdir) -> tuple[Path, dict]:
    plan = workdir / "plan.json"
    cli(workdir, "plan", "--model", "default", "--device", "cpu", "--method", "lowest_block_influence",
        "--target", "3", "--corpus", "builtin:all", "--seq-len", "64", "--max-windows", "2", "--out", str(plan))
    out = workdir / "pruned"
    cli(workdir, "apply", "--plan", str(plan), "--out", str(out), "--device", "cpu", "--max-windows", "1",
        "--repeats", "1")
    return out, json.loads(plan.read_text())


def charts(page, at_least: int) -> None:
    if at_least:
        expect(page.locator('[data-testid="stPlotlyChart"]').nth(at_least - 1)).to_be_attached(timeout=STEP_MS)


def test_downloaded_html_report_opens_offline_from_file(app_url, browser, tmp_path):
    context = browser.new_context(viewport={"width": 1440, "height": 1100}, accept_downloads=True)
    page = context.new_page()
    page.goto(f"{app_url}/logit_lens?{VIEW}")  # the lens first, so that the report holds it
    expect(page.get_by_text("Per-sequence oracle")).to_be_visible(timeout=LOAD_MS)
    nav(page, "Overview")
    button = page.get_by_role("button", name="Download report (HTML)")
    expect(button).to_be_visible(timeout=LOAD_MS)
    settle(page)
    with page.expect_download(timeout=STEP_MS) as download:
        button.click()
    path = tmp_path / "report.html"
    download.value.save_as(path)
    context.close()
    assert path.stat().st_size < 5_000_000

    offline = browser.new_context(viewport={"width": 1300, "height": 1000}, offline=True)
    report = offline.new_page()
    problems, requests = [], []
    report.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    report.on("pageerror", lambda err: problems.append(str(err)))
    report.on("request", lambda r: requests.append(r.url) if not r.url.startswith("file:") else None)
    report.goto(path.as_uri())
    expect(report.locator("body[data-figures-drawn]")).to_be_attached(timeout=STEP_MS)
    drawn = int(report.locator("body").get_attribute("data-figures-drawn"))
    assert drawn == report.locator(".js-plotly-plot").count() >= 14  # the removal sweep was not measured here
    expect(report.locator("#plotly-status")).to_have_count(0)
    heatmap = report.locator(".js-plotly-plot").first
    heatmap.locator(".nsewdrag").first.hover()
    expect(heatmap.locator(".hoverlayer .hovertext")).to_have_count(1, timeout=10_000)
    expect(report.get_by_text("Definitions", exact=True)).to_be_visible()
    assert not problems and not requests, (problems, requests)
    report.mouse.move(0, 0)
    report.screenshot(path=str(shots() / "html_report.png"))  # shown in the README
    assert (shots() / "html_report.png").stat().st_size > 10_000
    offline.close()


def test_cli_report_opens_every_page_with_no_model(model_free_url, browser, cli_report):
    context = browser.new_context(viewport={"width": 1440, "height": 1100})
    page = context.new_page()
    page.goto(f"{model_free_url}/")
    sidebar = page.locator('[data-testid="stSidebar"]')
    expect(page.get_by_text("not on this server's allow-list").first).to_be_visible(timeout=LOAD_MS)
    sidebar.get_by_text("Report file", exact=True).click()
    sidebar.locator("input[type=file]").set_input_files(str(cli_report))
    expect(page.get_by_text(BANNER).first).to_be_visible(timeout=STEP_MS)
    for title, ready, at_least in PAGES:
        if title != "Overview":
            nav(page, title)
        expect(page.get_by_text(ready, exact=False).first).to_be_visible(timeout=STEP_MS)
        settle(page)
        expect(page.get_by_text(BANNER).first).to_be_visible()
        no_failure(page)
        charts(page, at_least)
    expect(page.get_by_text("Reading out the blocks of one window needs the model")).to_be_visible()
    expect(page).to_have_url(re.compile(r"/logit_lens\?report=[0-9a-f]{64}$"))
    link = page.url
    context.close()

    fresh = browser.new_context(viewport={"width": 1440, "height": 1100})
    again = fresh.new_page()
    again.goto(link)
    expect(again.get_by_text(BANNER).first).to_be_visible(timeout=STEP_MS)
    expect(again.get_by_text("Per-sequence oracle")).to_be_visible(timeout=STEP_MS)
    settle(again)
    no_failure(again)
    fresh.close()


def test_compare_default_with_its_pruned_checkpoint(app_url, browser, checkpoint):
    out, plan = checkpoint
    removed = plan["remove"]["blocks"]
    context = browser.new_context(viewport={"width": 1440, "height": 1500})
    page = context.new_page()
    page.goto(f"{app_url}/compare?{VIEW}")
    box = page.get_by_label("Hub name or local directory (e.g. the checkpoint `apply` wrote)")
    expect(box).to_be_visible(timeout=LOAD_MS)
    box.fill(str(out))
    box.press("Enter")
    aligned = page.get_by_text("Layer axes aligned by the plan's kept-layer map", exact=False)
    expect(aligned).to_be_visible(timeout=LOAD_MS)
    expect(aligned).to_contain_text(f"removed blocks {removed}")
    expect(metric(page, "Perplexity B: pruned")).to_have_text(re.compile(r"^\d+\.\d{3}$"))
    page.get_by_role("button", name="Run the logit lens on both sides").click()
    expect(page.get_by_text("median rank of final top-1, plus 1").first).to_be_attached(timeout=LOAD_MS)
    settle(page)
    no_failure(page)
    charts(page, 5)
    expect(page).to_have_url(re.compile(r"/compare\?.*cmp_a=current&cmp_b=[0-9a-f]{64}"))
    link = page.url
    shoot(page, "compare")
    context.close()

    fresh = browser.new_context(viewport={"width": 1440, "height": 1100})
    again = fresh.new_page()
    again.goto(link)  # the checkpoint is a local path, so the link names a stored snapshot of its analysis
    expect(again.get_by_text("Layer axes aligned by the plan's kept-layer map").first).to_be_visible(timeout=LOAD_MS)
    settle(again)
    no_failure(again)
    fresh.close()
