"""Where the unwrapped model cannot serve (Accelerate-offloaded modules, or a hook site
that is not a module's input or output), every forward runs on the bridge: the pass, the
clean states, replayed blocks with the bridge's zeroing hooks, the playground and the
greedy. Forced here by making `unwrapped` give no decoder; the numbers must equal the
unwrapped path's."""
import numpy as np
import pytest

from tiny import TEXT
from analysis.data.corpus import Corpus, make_windows
from analysis.measure.pipeline import analyse
from analysis.model import unwrapped as unwrapped_mod
from analysis.model.removal import Removal
from analysis.ablate.replay import clean_states
from analysis.search.greedy import iterative_greedy
from analysis.playground.live import Playground
from analysis.ablate.sweep import exact_sweep


def everything(tiny):
    windows = make_windows(tiny.tokenizer, TEXT, 32)
    analysis = analyse(tiny, Corpus("t", TEXT), 32, use_cache=False, batch_tokens=200)
    sweep = exact_sweep(tiny, windows, batch_tokens=200)
    pg = Playground(tiny, windows, batch_tokens=200).build()
    toggled = pg.evaluate(Removal.of(attn=[1], mlp=[2]), memo=False).nll
    greedy = iterative_greedy(tiny, windows, "mlp", 2, batch_windows=2)
    return analysis, sweep, toggled, greedy


def test_the_bridge_path_gives_the_unwrapped_paths_numbers(tiny, monkeypatch):
    fast = everything(tiny)
    windows = make_windows(tiny.tokenizer, TEXT, 32)[:2]
    with tiny.lock:
        assert clean_states(tiny, windows).inputs.decoder is not None
    monkeypatch.setattr(unwrapped_mod, "unwrapped", lambda model: None)
    with tiny.lock:
        assert clean_states(tiny, windows).inputs.decoder is None  # the bridge's blocks now
    slow = everything(tiny)
    (a, sweep_a, toggled_a, greedy_a), (b, sweep_b, toggled_b, greedy_b) = fast, slow
    assert a.perplexity == pytest.approx(b.perplexity, rel=1e-5)
    np.testing.assert_allclose(a.similarity.cos_all, b.similarity.cos_all, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.sublayers.attn_score, b.sublayers.attn_score, rtol=1e-4, atol=1e-6)
    for key in ("block_ppl", "attn_ppl", "mlp_ppl"):
        np.testing.assert_allclose(sweep_a[key], sweep_b[key], rtol=1e-5)
    np.testing.assert_allclose(toggled_a, toggled_b, rtol=1e-5, atol=1e-6)
    assert greedy_a.order == greedy_b.order
    np.testing.assert_allclose(greedy_a.nll_sum, greedy_b.nll_sum, rtol=1e-5)


def test_hooked_sees_the_hidden_states_passed_by_keyword():
    """A module called with hidden_states as a keyword (some HF layers are) is observed
    through that keyword; one called positionally through its first argument."""
    import torch
    from analysis.model.unwrapped import UnwrappedDecoder

    class Layer(torch.nn.Linear):
        def forward(self, mask=None, hidden_states=None):
            return super().forward(hidden_states)

    seen = []
    layer = Layer(3, 3)
    hooked = UnwrappedDecoder.hooked.__wrapped__(None, {"x": (layer, "in"), "y": (layer, "out")},
                                                 [("x", seen.append), ("y", seen.append)])
    x = torch.randn(2, 3)
    with torch.no_grad():
        next(hooked)
        out = layer(mask=1, hidden_states=x)  # hidden_states, not the first keyword
        layer(None, x)
        hooked.close()
    assert torch.equal(seen[0], x) and torch.equal(seen[1], out) and seen[2] is None and len(seen) == 4
    layer(hidden_states=x)
    assert len(seen) == 4  # removed on exit
