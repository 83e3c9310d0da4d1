"""A newcomer's trial (issue 29) in AppTest on the tiny model: the model-loading box is
gone once the model is loaded, window counts are in the singular for one window, and
the Heal page reads the playground's removals from a link before the playground has
(the page change itself needs a browser: AppTest keeps the widgets' keys,
tests/e2e/test_trial_workflows.py)."""
import re

from apptest import open_app


def shown(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def test_no_loading_box_once_the_model_is_loaded(tiny_dir, isolated_cache):
    at = open_app(model=str(tiny_dir))  # this run loaded the model
    assert [s.label for s in at.status] == []
    at.switch_page("pages/similarity.py")
    at.run()
    assert [s.label for s in at.status] == []
    assert not at.exception


def test_one_held_out_window_is_singular(tiny_dir, isolated_cache):
    at = open_app(model=str(tiny_dir), max_windows=5)  # 4 calibration windows, 1 held out
    captions = [shown(c.value) for c in at.sidebar.caption]
    assert "Calibration: 4 windows; evaluation: 1 held-out window." in captions, captions


def test_heal_page_reads_the_link_removals(tiny, tiny_dir, isolated_cache):
    at = open_app("healing", model=str(tiny_dir), max_windows=5, query={"rm_blocks": "1,9", "rm_mlp": "2"})
    texts = [shown(m.value) for m in at.markdown]
    assert "Removed blocks 1; MLP sublayers 2." in texts, texts
    warnings = [shown(w.value) for w in at.warning]
    assert f"From the link: Ignored blocks out of range 0..{tiny.n_layers - 1}: [9]." in warnings, warnings
    assert not any("Nothing is removed" in shown(i.value) for i in at.info)

