"""Several sessions share one model: concurrent analyses and removals must each get
exactly their own numbers (no hook leaks between sessions), never deadlock, and keep
memory flat."""
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import psutil
import pytest

from tiny import TEXT
from analysis.model.removal import Removal
from analysis.plans.apply import evaluate
from analysis.data.corpus import Corpus, make_windows
from analysis.measure.lens import window_grid
from analysis.measure.pipeline import analyse
from analysis.measure.sparsity import token_density

SESSIONS = [
    Removal.of(blocks=[1]), Removal.of(attn=[0, 2]), Removal.of(mlp=[3]),
    Removal.of(blocks=[0], mlp=[2]), Removal.of(), Removal.of(attn=[3], mlp=[1]),
]


def session_work(model, index: int) -> dict:
    """What one browser session does: its own removal, its own analysis settings, window views."""
    seq_len = 16 + 4 * index
    windows = make_windows(model.tokenizer, TEXT, seq_len)
    result = analyse(model, Corpus(f"s{index}", TEXT), seq_len, use_cache=False, batch_tokens=128)
    full, pruned = evaluate(model, SESSIONS[index], windows, batch_tokens=64)
    grid = window_grid(model, windows[0])
    density = token_density(model, windows[0], 0.01)
    return {"ppl": result.perplexity, "cos": np.asarray(result.similarity.cos_all),
            "lens_ce": np.asarray(result.lens.ce), "full": full, "pruned": pruned,
            "grid_kl": grid["kl"], "density": density}


def assert_same(a: dict, b: dict) -> None:
    for key in a:
        assert np.array_equal(np.asarray(a[key]), np.asarray(b[key])), key


def test_concurrent_sessions_match_serial_runs(tiny):
    serial = [session_work(tiny, i) for i in range(len(SESSIONS))]
    assert len({round(s["pruned"], 6) for s in serial}) == len(SESSIONS)  # sessions really differ
    process = psutil.Process()
    rss = []
    for round_ in range(2):
        with ThreadPoolExecutor(max_workers=len(SESSIONS)) as pool:
            futures = [pool.submit(session_work, tiny, i) for i in range(len(SESSIONS))]
            results = [f.result(timeout=300) for f in futures]  # a deadlock fails here
        for got, want in zip(results, serial):
            assert_same(got, want)
        rss.append(process.memory_info().rss)
    assert rss[-1] - rss[0] < 150 * 2**20, f"memory grew {(rss[-1] - rss[0]) / 2**20:.0f} MB"
    # no hook left behind on the shared model after all sessions finished
    assert sum(len(hp._forward_hooks) for hp in tiny.bridge.hook_dict.values()) == 0


def _hook_count(model) -> int:
    return sum(len(point._forward_hooks) + len(point._forward_pre_hooks) for point in model.bridge.hook_dict.values())


def test_hooks_removed_after_error(tiny):
    windows = make_windows(tiny.tokenizer, TEXT, 16)
    before, hooks_before = session_work(tiny, 0), _hook_count(tiny)

    class Boom(Exception):
        pass

    def bad_hook(tensor, hook):
        raise Boom()

    with pytest.raises(Boom):
        with tiny.lock, tiny.bridge.hooks(fwd_hooks=[("blocks.1.hook_mlp_out", bad_hook)]):
            tiny.bridge(windows[:1])
    assert _hook_count(tiny) == hooks_before
    after = session_work(tiny, 0)
    assert after["ppl"] == before["ppl"] and after["pruned"] == before["pruned"]
    assert np.array_equal(after["cos"], before["cos"])
    assert not tiny.lock._is_owned()
