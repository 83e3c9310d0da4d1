"""The playground page in AppTest on the tiny model: a link restores clamped toggles,
prompt and numbers; a preset sets the toggles; the MergeKit export names the model typed."""
import pytest
import yaml

from analysis.model.removal import Removal
from apptest import toggles

SEQ = 32


def _playground_app(tiny_dir, query: dict):
    from apptest import open_app
    return open_app("playground", model=str(tiny_dir), seq_len=SEQ, max_windows=3, query=query)


def _expected_ppl(tiny, removal) -> str:
    from analysis.data.corpus import load_corpus
    from analysis.playground.live import get_playground
    return f"{get_playground(tiny, load_corpus('builtin:all'), SEQ, 3).evaluate(removal).perplexity:.3f}"


def test_link_restores_clamped_toggles_prompt_and_numbers(tiny, tiny_dir, isolated_cache):
    at = _playground_app(tiny_dir, {"rm_blocks": "1,99", "rm_mlp": "2", "prompt": "Where are"})
    assert any("out of range 0..3: [99]" in w.value for w in at.warning), [w.value for w in at.warning]
    fp = tiny.fingerprint
    assert toggles(at, fp) == {"blocks": [1], "attn": [], "mlp": [2]}
    assert at.text_input(key="pg_prompt").value == "Where are"
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Pruned perplexity"] == _expected_ppl(tiny, Removal.of(blocks=[1], mlp=[2]))
    assert metrics["Full perplexity"] == _expected_ppl(tiny, Removal())
    assert at.query_params["rm_blocks"] == "1" and at.query_params["rm_mlp"] == "2"
    link = next(c.value for c in at.code if c.value.startswith("http"))
    assert "rm_blocks=1&" in link and "prompt=Where+are" in link and "/playground?" in link


def test_preset_sets_toggles_and_nothing_removed_says_full_model(tiny, tiny_dir, isolated_cache):
    at = _playground_app(tiny_dir, {})
    assert any(i.value == "Nothing removed: this is the full model." for i in at.info)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Pruned perplexity"] == metrics["Full perplexity"]
    at.selectbox(key="pg_preset").set_value("reverse_order")
    at.number_input(key="pg_k").set_value(2)
    at.button[0].click().run()
    fp = tiny.fingerprint
    assert toggles(at, fp)["blocks"] == [1, 2]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Pruned perplexity"] == _expected_ppl(tiny, Removal.of(blocks=[1, 2]))
    assert at.query_params["rm_blocks"] == "1,2" and toggles(at, tiny.fingerprint)["blocks"] == [1, 2]


def test_toggles_set_by_the_server_survive_a_rerun_carrying_the_old_pill_values(tiny, tiny_dir, isolated_cache):
    """A preset (or an imported plan) sets the toggles from the server. A rerun the browser
    sent before it drew the new pills (the sidebar's timer, a quick click elsewhere) still
    carries the old pill values; they must not switch the toggles back."""
    at = _playground_app(tiny_dir, {})
    stale = at._tree.get_widget_states()  # what the browser holds before the preset is drawn
    at.selectbox(key="pg_preset").set_value("reverse_order")
    at.number_input(key="pg_k").set_value(2)
    at.button[0].click().run()
    expected = _expected_ppl(tiny, Removal.of(blocks=[1, 2]))
    assert {m.label: m.value for m in at.metric}["Pruned perplexity"] == expected
    at._run(stale)
    assert not at.exception
    assert {m.label: m.value for m in at.metric}["Pruned perplexity"] == expected
    assert at.query_params["rm_blocks"] == "1,2" and toggles(at, tiny.fingerprint)["blocks"] == [1, 2]


def test_estimate_is_marked_until_exact_and_nothing_removed_shows_no_delta(tiny, tiny_dir, isolated_cache,
                                                                           monkeypatch):
    """Issue 29 (7): the first number is an estimate over the windows done so far; the metric
    itself says so ("~" and an "estimate" badge) until every window is in, then renders the
    exact number plainly with an "exact" badge. With nothing removed there is no delta."""
    import math
    import threading

    import reference
    from analysis.data.corpus import load_corpus
    from analysis.data.evaluation import windows_for
    from analysis.playground import live as pg_module
    from ui import internals

    release, real = threading.Event(), pg_module.Playground.group_nll
    seen = []

    def held(self, group, removal, *args, **kwargs):  # a removal's first group (2 of the 4 windows) goes through
        seen.append(removal)
        if seen.count(removal) > 1:
            release.wait(120)
        return real(self, group, removal, *args, **kwargs)

    monkeypatch.setattr(pg_module.Playground, "group_nll", held)
    monkeypatch.setattr(pg_module, "SAMPLE_WINDOWS", 2)
    monkeypatch.setattr(internals, "rerun_pending", lambda: True)  # the run ends with what is on screen
    removal = Removal.of(blocks=[2])
    try:
        at = open_app_windows(tiny_dir, {"rm_blocks": "2"}, 4)
        shown = {m.label: m.value for m in at.metric}
        windows = windows_for(tiny, load_corpus("builtin:all"), SEQ, 4)
        pg = pg_module.get_playground(tiny, load_corpus("builtin:all"), SEQ, 4)
        sample = pg.groups[0].tolist()
        assert len(sample) == 2 and sample[0] < 2 <= sample[1]  # one window from each half of the corpus
        hf = reference.plain_model(tiny_dir)
        pruned_hf = reference.without_layers(hf, {2})
        # the full model's loss over all windows, plus the mean change on the sample (the control variate)
        change = [math.log(reference.perplexity(pruned_hf, windows[[w]]) / reference.perplexity(hf, windows[[w]]))
                  for w in sample]
        estimate = reference.perplexity(hf, windows) * math.exp(sum(change) / 2)
        assert shown["Pruned perplexity"].startswith("~")
        assert float(shown["Pruned perplexity"][1:]) == pytest.approx(estimate, abs=1.5e-3)
        assert any("badge" in m.value and "estimate (2 of 4 windows)" in m.value for m in at.markdown)
        assert not any("badge" in m.value and "exact" in m.value for m in at.markdown)
    finally:
        release.set()
    job = pg.request(removal)
    assert job.wait(windows=4, timeout=120) and job.complete
    at.run()
    shown = {m.label: m.value for m in at.metric}
    assert shown["Pruned perplexity"] == f"{reference.perplexity(pruned_hf, windows):.3f}"
    assert any("badge" in m.value and "exact" in m.value for m in at.markdown)
    assert not any("badge" in m.value and "estimate" in m.value for m in at.markdown)

    full = open_app_windows(tiny_dir, {}, 4)
    metric = next(m for m in full.metric if m.label == "Pruned perplexity")
    assert metric.value == next(m for m in full.metric if m.label == "Full perplexity").value
    assert not metric.delta  # not a red "+0.00%"


def open_app_windows(tiny_dir, query: dict, max_windows: int):
    from apptest import open_app
    return open_app("playground", model=str(tiny_dir), seq_len=SEQ, max_windows=max_windows, query=query)


def test_mergekit_yaml_names_the_model_typed_in_the_export(tiny, tiny_dir, isolated_cache, monkeypatch):
    from streamlit.runtime.media_file_manager import MediaFileManager

    served = {}
    add = MediaFileManager.add

    def record(self, data, mimetype, coordinates, file_name=None, *args, **kwargs):
        served[file_name] = data
        return add(self, data, mimetype, coordinates, file_name, *args, **kwargs)

    monkeypatch.setattr(MediaFileManager, "add", record)
    at = _playground_app(tiny_dir, {"rm_blocks": "1"})
    box = at.text_input(key=f"pg_mergekit_model_{tiny.fingerprint}")
    assert box.placeholder == str(tiny_dir.resolve())  # empty: the model's own directory
    assert {s["sources"][0]["model"] for s in yaml.safe_load(served["layer-lab-mergekit.yaml"])["slices"]} \
        == {str(tiny_dir.resolve())}
    box.set_value("  org/tiny-copy ").run()
    config = yaml.safe_load(served["layer-lab-mergekit.yaml"])
    assert {s["sources"][0]["model"] for s in config["slices"]} == {"org/tiny-copy"}
    assert [s["sources"][0]["layer_range"] for s in config["slices"]] == [[0, 1], [2, 4]]
