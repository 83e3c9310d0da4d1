"""Progressive playground evaluation (issue 17): a running estimate with an interval that
refines to exactly the full evaluation, served most-recent-first, never blocking."""
import math
import threading

import numpy as np
import pytest

from tiny import TEXT
from analysis.data.corpus import make_windows
from analysis.model.removal import Removal
from analysis.playground.live import Playground
from analysis.ablate.progressive import Progressive, batch_order


@pytest.fixture(scope="module")
def pg(tiny):
    windows = make_windows(tiny.tokenizer, TEXT * 3, 24)
    return Playground(tiny, windows, key=("progressive-test", windows.shape), batch_tokens=2 * windows.shape[1]).build()


def test_estimate_refines_to_the_exact_evaluation(pg):
    removal = Removal.of(blocks=[1], mlp=[3])
    job = pg.request(removal)
    assert job.wait(batches=job.n_batches, timeout=120)
    snap = job.snapshot()
    exact = pg.evaluate(removal, memo=False)
    assert snap.complete and snap.windows_total == pg.windows.shape[0]
    assert snap.perplexity == pytest.approx(exact.perplexity, rel=1e-9)
    assert np.array_equal(job.nll(), exact.nll)
    assert pg.request(removal).complete  # now served from the shared memo at once


def test_partial_snapshot_is_the_mean_of_the_windows_done_with_an_interval():
    job = Progressive(Removal.of(attn=[0]), n_batches=3, n_windows=6)
    job.add(2, np.array([[1.0, 1.0], [2.0, 2.0]]))
    job.add(0, np.array([[3.0, 3.0], [4.0, 4.0]]))
    snap = job.snapshot()
    means = np.array([3.0, 4.0, 1.0, 2.0])
    se = means.std(ddof=1) / 2 * math.sqrt(1 - 4 / 6)
    assert (snap.windows_done, snap.windows_total) == (4, 6) and not snap.complete
    assert snap.perplexity == pytest.approx(math.exp(2.5))
    assert snap.low == pytest.approx(math.exp(2.5 - 1.96 * se)) and snap.high == pytest.approx(math.exp(2.5 + 1.96 * se))
    assert "estimate (4 of 6 windows)" in snap.label()


def test_order_is_a_fixed_permutation_per_corpus():
    assert sorted(batch_order("a", 7)) == list(range(7))
    assert batch_order("a", 7) == batch_order("a", 7)
    assert batch_order("a", 7) != batch_order("b", 7)


def test_most_recent_request_is_served_first(pg):
    first, second = Removal.of(blocks=[0]), Removal.of(blocks=[2])
    a = pg.request(first)
    b = pg.request(second)
    assert b.wait(batches=b.n_batches, timeout=120)
    assert a.wait(batches=a.n_batches, timeout=120)
    assert np.array_equal(b.nll(), pg.evaluate(second, memo=False).nll)
    assert np.array_equal(a.nll(), pg.evaluate(first, memo=False).nll)


def test_a_failing_evaluation_reports_its_error(pg, monkeypatch):
    def boom(self, state, removal):
        raise RuntimeError("broken block")
    monkeypatch.setattr(Playground, "_batch_nll", boom)
    job = pg.request(Removal.of(mlp=[1, 2]))
    assert job.wait(timeout=60)
    with pytest.raises(RuntimeError, match="broken block"):
        job.snapshot()


def test_sessions_take_turns_so_a_busy_one_cannot_starve_another(tiny):
    """Issue 31's soak: one session clicking on and on starved the others (LIFO over every
    request). With owners, a waiting session's removal gets every other batch however
    often another session asks for new removals, and its result equals a plain evaluation."""
    from analysis.data.corpus import make_windows
    from analysis.playground.live import Playground
    from tiny import TEXT

    pg = Playground(tiny, make_windows(tiny.tokenizer, TEXT, 16, max_windows=8), batch_tokens=32).build()
    gate = threading.Event()
    real = pg._batch_nll
    served = []
    pg._batch_nll = lambda state, removal: (gate.wait(60), served.append(removal), real(state, removal))[2]
    a = Removal.of(blocks=[1])
    waiting = pg.request(a, owner="a")
    busy = [pg.request(Removal.of(attn=[i % 4], mlp=[(i + 1) % 4]), owner="b") for i in range(6)]
    gate.set()
    assert waiting.wait(batches=waiting.n_batches, timeout=120) and waiting.complete
    last_a = max(i for i, r in enumerate(served) if r == a)
    before = served[:last_a + 1]
    assert before.count(a) == waiting.n_batches
    assert set(before) <= {a, busy[-1].removal}  # b's replaced requests wait; b's latest only had its turns
    assert before.count(busy[-1].removal) <= waiting.n_batches
    assert np.allclose(waiting.nll(), pg.evaluate(Removal.of(blocks=[1]), memo=False).nll, rtol=1e-6, atol=1e-7)
