"""Fused reductions (analysis/measure/fused.py, issue 12): the compiled function gives the eager
function's numbers, both agree with a plain computation, and a failed compile falls
back to the eager function for good."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from analysis.measure import fused as fused_mod
from analysis.measure.lens import readout_signals
from analysis.measure.sparsity import EPS_GRID, P_GRID, threshold_counts
from analysis.measure.sublayers import layer_sums


def both(f, *args):
    """(compiled result, eager result) of a Fused function."""
    return f(*args), f.fn(*args)


def test_threshold_counts_compiled_equal_eager_and_a_plain_count():
    torch.manual_seed(0)
    x = F.silu(torch.randn(3, 17, 40)) * torch.randn(3, 17, 40) * 0.1
    x[0, 0, :5] = 0.0
    x[1, 2, 3] = 1e-2  # exactly on a threshold: counted as below (|a| <= eps)
    compiled, eager = both(threshold_counts, x[:, 1:], EPS_GRID, P_GRID)
    for a, b in zip(compiled, eager):
        assert torch.equal(a, b)
    a = x[:, 1:].abs().reshape(-1, 40).double()
    below, exact, rel = compiled
    for i, eps in enumerate(EPS_GRID):
        assert torch.equal(below[i].long(), (a <= eps).sum(0))
    assert int(exact) == int((a == 0).sum())
    for i, p in enumerate(P_GRID):
        assert int(rel[i]) == int((a <= p * a.amax(-1, keepdim=True)).sum())
    bf16 = threshold_counts(x.bfloat16(), EPS_GRID, P_GRID)  # counted in float32 from any dtype
    assert torch.equal(bf16[0], threshold_counts.fn(x.bfloat16().float(), EPS_GRID, P_GRID)[0])


def test_readout_signals_compiled_equal_eager_and_log_softmax():
    torch.manual_seed(1)
    n, V = 9, 300
    final = torch.randn(n, V) * 3
    layer = torch.randn(n, V) * 2
    layer[0, 7] = layer[0, 11] = layer[0].max() + 1  # a tie at the top: the top-2 gap is 0
    gold = torch.randint(0, V, (n,))
    logp_f = F.log_softmax(final, -1)
    p_f = logp_f.exp()
    neg_h_f = (p_f * logp_f).sum(-1)
    top1_f = final.argmax(-1)
    layer[1, top1_f[1]] = layer[1].max() + 1  # this row agrees with the final top-1
    compiled, eager = both(readout_signals, layer, top1_f, gold, p_f, neg_h_f)
    for key in compiled:
        torch.testing.assert_close(compiled[key], eager[key], rtol=1e-5, atol=1e-5)
    logp = F.log_softmax(layer.double(), -1)
    top2 = logp.topk(2, -1).values
    plain = {
        "ce": -logp.gather(-1, gold[:, None]).squeeze(-1),
        "kl": (p_f.double() * (logp_f.double() - logp)).sum(-1),
        "entropy": -(logp.exp() * logp).sum(-1),
        "agree": (layer.argmax(-1) == top1_f).double(),
        "rank": (layer > layer.gather(-1, top1_f[:, None])).sum(-1).double(),
        "maxprob": top2[:, 0].exp(),
        "gap": top2[:, 0].exp() - top2[:, 1].exp(),
    }
    plain["agree"][0] = compiled["agree"][0].double()  # a tied top: argmax picks one of the two
    for key, value in plain.items():
        torch.testing.assert_close(compiled[key].double(), value, rtol=1e-4, atol=1e-5, msg=key)
    assert compiled["agree"][1] == 1 and compiled["gap"][0] == 0


@pytest.mark.parametrize("parallel", [False, True])
def test_layer_sums_compiled_equal_eager_and_cosines(parallel):
    torch.manual_seed(2)
    pre, attn, mlp = (torch.randn(2, 6, 8) for _ in range(3))
    mid = None if parallel else pre + attn
    post = pre + attn + mlp
    compiled, eager = both(layer_sums, pre, mid, post, attn, mlp)
    torch.testing.assert_close(compiled, eager)
    stream_in = pre if parallel else mid
    attn_to = pre + attn
    mlp_to = pre + mlp if parallel else post
    plain = [F.cosine_similarity(pre, attn_to, dim=-1).sum(), F.cosine_similarity(stream_in, mlp_to, dim=-1).sum(),
             (attn.norm(dim=-1) / pre.norm(dim=-1)).sum(), (mlp.norm(dim=-1) / stream_in.norm(dim=-1)).sum()]
    np.testing.assert_allclose(compiled.numpy(), torch.stack(plain).double().numpy(), rtol=1e-5)


def test_a_failed_compile_falls_back_to_eager_for_good(monkeypatch):
    calls = []

    def broken_compile(fn, **kwargs):
        def run(*args):
            calls.append("compiled")
            raise RuntimeError("no C++ compiler found\nmore detail")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    f = fused_mod.Fused(lambda x: x * 2, examples=list)  # not registered: the real kernels stay compiled
    assert torch.equal(f(torch.ones(3)), torch.full((3,), 2.0))
    assert f.failed.startswith("RuntimeError: no C++ compiler found")
    assert torch.equal(f(torch.ones(2)), torch.full((2,), 2.0)) and calls == ["compiled"]  # not tried again


def test_layerlab_compile_0_never_compiles(monkeypatch):
    monkeypatch.setenv("LAYERLAB_COMPILE", "0")
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: pytest.fail("compiled although LAYERLAB_COMPILE=0"))
    f = fused_mod.Fused(lambda x: x + 1, examples=list)
    assert torch.equal(f(torch.zeros(2)), torch.ones(2)) and f.compiled is None


def test_warm_up_compiles_every_fused_reduction(monkeypatch):
    """Each measure module registers its kernel with its own example inputs (the registry
    names no user), and warm_up runs every registered kernel on each of its examples."""
    from analysis.measure import pipeline  # noqa: F401 (imports every module that defines a kernel)
    names = sorted(k.__name__ for k in fused_mod.KERNELS)
    assert names == ["layer_sums", "readout_signals", "threshold_counts"]
    ran = []
    for kernel in fused_mod.KERNELS:
        examples = kernel.examples()
        assert examples, kernel.__name__
        monkeypatch.setattr(kernel, "examples", lambda ex=examples, name=kernel.__name__: ran.extend([name] * len(ex)) or ex)
    fused_mod.warm_up()
    assert sorted(set(ran)) == names and ran.count("layer_sums") == 2  # the sequential and the parallel-block variant
    assert all(k.compiled is not None for k in fused_mod.KERNELS) and fused_mod.failures() == ""
