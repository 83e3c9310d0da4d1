"""The logit-lens page in AppTest on the tiny model: the early-exit threshold opens at an
operating point a user would pick (the cheapest threshold whose agreement with the full
model reaches 0.9 on these windows), and the operating-point table shows enough digits
to tell 0.9995 from 1 (issue 29, 9)."""
from apptest import no_traceback, open_app
from analysis.data.corpus import load_corpus
from analysis.measure.pipeline import analyse

SEQ, WINDOWS = 16, 3


def test_early_exit_opens_at_the_operating_point_and_shows_its_digits(tiny, tiny_dir, isolated_cache):
    at = open_app("logit_lens", model=str(tiny_dir), seq_len=SEQ, max_windows=WINDOWS)
    no_traceback(at)
    ee = analyse(tiny, load_corpus("builtin:all"), SEQ, max_windows=WINDOWS).lens.early_exit  # what the page read
    curve = ee.curves["max_prob"]
    reaching = [(f, t, a) for t, f, a in zip(curve.thresholds, curve.fraction_blocks, curve.agreement) if a >= 0.9]
    fraction, threshold, agreement = min(reaching)  # the cheapest threshold with agreement >= 0.9
    assert at.select_slider(key="exit_threshold_max_prob").value == threshold
    assert agreement >= 0.9 and threshold != curve.thresholds[len(curve.thresholds) // 2]
    assert at.slider(key="exit_target").value == 0.9
    table = next(d.value for d in at.dataframe if "rule" in d.value.columns)
    row = table[table["rule"] == "max_prob"].iloc[0]
    assert row["threshold"] == f"{threshold:g}" and row["agreement"] == f"{agreement:.4f}"
    assert row["fraction_blocks"] == f"{fraction:.4f}"
    i = curve.thresholds.index(threshold)
    assert row["delta_ce"] == f"{curve.delta_ce[i]:+.4f} nats"
