"""The vocabulary bound (analysis/ablate/bound.py) on the tiny model: never above the exact NLL,
equal to it (less the margin) when the subset is the whole vocabulary, and switched off
where rounding could make it wrong (half precision, a logit transform that is not
elementwise)."""
import pytest
import torch

from analysis.model import hooks
from analysis.measure.collect import token_nll
from analysis.ablate import bound


@pytest.fixture(scope="module")
def states(tiny):
    torch.manual_seed(0)
    tokens = torch.randint(0, tiny.tokenizer.vocab_size, (2, 17))
    resid = torch.randn(2, 17, tiny.d_model) * 3
    with torch.inference_mode():
        normed = hooks.final_norm(tiny, resid)
        return tokens, normed, hooks.unembed(tiny, normed)


def test_bound_is_below_the_exact_nll_and_tight_on_the_whole_vocabulary(tiny, states):
    tokens, normed, logits = states
    exact = float(token_nll(logits, tokens).double().sum())
    assert bound.usable(tiny)
    with torch.inference_mode():
        for k in (1, 4):
            s = bound.subset(tiny, logits, tokens, k)
            assert s.size < logits.shape[-1]
            assert bound.lower_bound(tiny, normed, s) < exact
        whole = bound.subset(tiny, logits, tokens, logits.shape[-1])
        assert whole.size == logits.shape[-1]
        margin = bound.MARGIN_PER_TOKEN * tokens[:, 1:].numel()
        assert bound.lower_bound(tiny, normed, whole) == pytest.approx(exact - margin, abs=1e-3)
        # the small subset misses more of the probability mass than the large one
        small, large = (bound.lower_bound(tiny, normed, s) for s in bound.subsets(tiny, logits, tokens))
        assert small <= large + 1e-6


def test_bound_is_off_where_rounding_or_the_transform_could_break_it(tiny, monkeypatch):
    modules = hooks.final_modules(tiny)
    monkeypatch.setattr(hooks, "final_modules", lambda m: (*modules[:2], lambda z: z - z.mean(-1, keepdim=True)))
    assert not bound.usable(tiny)  # a transform mixing columns
    monkeypatch.setattr(hooks, "final_modules", lambda m: (*modules[:2], lambda z: torch.tanh(z / 30) * 30))
    assert bound.usable(tiny)  # Gemma-style soft-capping is elementwise
    monkeypatch.setattr(torch, "get_float32_matmul_precision", lambda: "high")
    assert not bound.usable(tiny)


def test_bound_is_off_in_half_precision(tiny, monkeypatch):
    monkeypatch.setattr(type(tiny.hf_model), "dtype", property(lambda self: torch.bfloat16))
    assert not bound.usable(tiny)
