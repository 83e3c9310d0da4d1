"""Progressive playground evaluation (issues 17 and 30): a running estimate with an
interval that refines to exactly the full evaluation, served most-recent-first, never
blocking, preempted by a new request."""
import math
import threading

import numpy as np
import pytest

from tiny import TEXT
from analysis.data.corpus import make_windows
from analysis.model.removal import Removal
from analysis.playground.live import Playground
from analysis.ablate.progressive import Progressive, group_windows, sample_windows
from analysis.ablate.replay import removal_nll


@pytest.fixture(scope="module")
def pg(tiny):
    windows = make_windows(tiny.tokenizer, TEXT * 3, 24)
    return Playground(tiny, windows, key=("progressive-test", windows.shape), batch_tokens=2 * windows.shape[1]).build()


def test_estimate_refines_to_the_exact_evaluation(pg):
    removal = Removal.of(blocks=[1], mlp=[3])
    job = pg.request(removal)
    assert job.wait(windows=pg.windows.shape[0], timeout=120)
    snap = job.snapshot()
    exact = pg.evaluate(removal, memo=False)
    assert snap.complete and snap.windows_total == pg.windows.shape[0]
    assert snap.perplexity == pytest.approx(exact.perplexity, rel=1e-9)
    assert np.array_equal(job.nll(), exact.nll)
    assert pg.request(removal).complete  # now served from the shared memo at once


def test_groups_give_the_numbers_of_one_plain_batch_bit_for_bit(tiny, pg):
    """Issue 30 (5): the grouped, chunked evaluation equals the sweep's suffix replay over
    the windows in one batch, bit for bit (a window's losses do not depend on its group)."""
    removals = [Removal.of(blocks=[1], mlp=[3]), Removal.of(attn=[0]), Removal.of(mlp=[2]), Removal.of(blocks=[3])]
    got = {}
    removal_nll(tiny, pg.windows, removals, batch_tokens=pg.windows.numel(),
                on_tokens=lambda i, offset, nll: got.setdefault(i, nll.numpy()))
    assert np.array_equal(pg.full.nll, got[-1].astype(np.float64))
    for i, removal in enumerate(removals):
        assert np.array_equal(pg.evaluate(removal, memo=False).nll, got[i].astype(np.float64))


def test_partial_snapshot_is_the_mean_of_the_windows_done_with_an_interval():
    job = Progressive(Removal.of(attn=[0]), n_windows=6)
    job.add([4, 5], np.array([[1.0, 1.0], [2.0, 2.0]]))
    job.add([0, 1], np.array([[3.0, 3.0], [4.0, 4.0]]))
    snap = job.snapshot()
    means = np.array([3.0, 4.0, 1.0, 2.0])
    se = means.std(ddof=1) / 2 * math.sqrt(1 - 4 / 6)
    assert (snap.windows_done, snap.windows_total) == (4, 6) and not snap.complete
    assert snap.perplexity == pytest.approx(math.exp(2.5))
    assert snap.low == pytest.approx(math.exp(2.5 - 1.96 * se)) and snap.high == pytest.approx(math.exp(2.5 + 1.96 * se))
    assert "estimate (4 of 6 windows)" in snap.label()


def test_the_full_models_losses_are_the_control_variate():
    """Issue 30 (2): estimate = the full model's mean over all windows + the mean change over
    the windows done; the interval is the standard error of the changes."""
    baseline = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    job = Progressive(Removal.of(attn=[0]), n_windows=6, baseline=baseline)
    job.add([0, 5], np.array([[1.5, 1.5], [6.7, 6.7]]))
    snap = job.snapshot()
    change = np.array([0.5, 0.7])
    se = change.std(ddof=1) / math.sqrt(2) * math.sqrt(1 - 2 / 6)
    assert snap.perplexity == pytest.approx(math.exp(3.5 + 0.6))
    assert snap.low == pytest.approx(math.exp(3.5 + 0.6 - 1.96 * se)) and snap.high == pytest.approx(math.exp(4.1 + 1.96 * se))
    job.add([1, 2, 3, 4], np.array([[2.1] * 2, [3.4] * 2, [4.4] * 2, [5.9] * 2]))
    exact = job.snapshot()
    assert exact.complete and exact.low == exact.high == exact.perplexity
    assert exact.perplexity == pytest.approx(math.exp(np.mean([1.5, 2.1, 3.4, 4.4, 5.9, 6.7])))


def test_groups_are_a_stratified_sample_then_the_rest_spread_over_the_corpus():
    sample = sample_windows("a", 36, 4)
    assert [int(w) // 9 for w in sample] == [0, 1, 2, 3]  # one window from each quarter of the corpus
    assert np.array_equal(sample, sample_windows("a", 36, 4))
    groups = group_windows("a", 36, 4, 12)
    assert np.array_equal(groups[0], sample[[0, 2]]) and np.array_equal(groups[1], sample[[1, 3]])
    assert [len(g) for g in groups] == [2, 2, 11, 11, 10]
    assert np.array_equal(np.sort(np.concatenate(groups)), np.arange(36))
    assert all(np.ptp(g) >= 18 for g in groups)  # every group reaches across the corpus
    assert [g.tolist() for g in group_windows("b", 36, 4, 12)] != [g.tolist() for g in groups]  # fixed per key
    assert [len(g) for g in group_windows(None, 3, 4, 2)] == [3]
    assert [len(g) for g in group_windows(None, 6, 6, 6)] == [6]  # a sample of every window is one group


def test_most_recent_request_is_served_first(pg):
    first, second = Removal.of(blocks=[0]), Removal.of(blocks=[2])
    a = pg.request(first)
    b = pg.request(second)
    assert b.wait(windows=b.n_windows, timeout=120)
    assert a.wait(windows=a.n_windows, timeout=120)
    assert np.array_equal(b.nll(), pg.evaluate(second, memo=False).nll)
    assert np.array_equal(a.nll(), pg.evaluate(first, memo=False).nll)


def test_a_failing_evaluation_reports_its_error(pg, monkeypatch):
    def boom(self, *args, **kwargs):
        raise RuntimeError("broken block")
    monkeypatch.setattr(Playground, "group_nll", boom)
    job = pg.request(Removal.of(mlp=[1, 2]))
    assert job.wait(timeout=60)
    with pytest.raises(RuntimeError, match="broken block"):
        job.snapshot()


def paused_after_first_chunk(tiny, paused: Removal):
    """A playground of a 1-window sample and one big group, whose big group pauses after
    its first readout chunk when it evaluates `paused`, until `release` is set:
    (playground, its own group_nll, entered, release, the groups evaluated in order)."""
    windows = make_windows(tiny.tokenizer, TEXT * 3, 16)
    pg = Playground(tiny, windows, batch_tokens=windows.numel(), sample_size=1).build()
    assert len(pg.groups) == 2 and len(pg.groups[1]) > 4, [len(g) for g in pg.groups]
    entered, release, calls = threading.Event(), threading.Event(), []
    real = pg.group_nll

    def held(group, removal, add, done=None, check=None):
        calls.append(group)

        def slow_add(idx, nll):
            add(idx, nll)
            if removal == paused and group == 1:
                entered.set()
                release.wait(60)
        return real(group, removal, slow_add, done, check)

    pg.group_nll = held
    return pg, real, entered, release, calls


def test_a_new_request_stops_the_running_group_and_keeps_what_is_done(tiny):
    """Issue 30 (3): a group under way stops at the next block or readout chunk when a new
    request comes; its chunks already read out stay, and the removal, asked again, resumes
    and ends with the exact numbers."""
    first, other = Removal.of(blocks=[0]), Removal.of(mlp=[3])
    pg, real, entered, release, _ = paused_after_first_chunk(tiny, first)
    a = pg.request(first, owner="s")
    assert entered.wait(60)
    done_before = a.windows_done
    b = pg.request(other, owner="s")  # preempts: `first`'s group stops at its next check
    release.set()
    assert b.wait(windows=b.n_windows, timeout=120) and b.complete
    assert not a.complete and a.windows_done == done_before  # stopped, what was done kept
    pg.group_nll = real
    again = pg.request(first, owner="s")
    assert again is a and a.wait(windows=a.n_windows, timeout=120)
    assert np.array_equal(a.nll(), pg.evaluate(first, memo=False).nll)
    assert np.array_equal(b.nll(), pg.evaluate(other, memo=False).nll)


def test_sessions_take_turns_so_a_busy_one_cannot_starve_another(tiny):
    """Issue 31's soak: one session clicking on and on starved the others (LIFO over every
    request). With owners, a waiting session's removal gets every other group however
    often another session asks for new removals, and its result equals a plain evaluation."""
    pg = Playground(tiny, make_windows(tiny.tokenizer, TEXT, 16, max_windows=8), batch_tokens=32).build()
    gate = threading.Event()
    real = pg.group_nll
    served = []
    pg.group_nll = lambda group, removal, *a, **k: (gate.wait(60), served.append(removal), real(group, removal, *a, **k))[2]
    a = Removal.of(blocks=[1])
    waiting = pg.request(a, owner="a")
    busy = [pg.request(Removal.of(attn=[i % 4], mlp=[(i + 1) % 4]), owner="b") for i in range(6)]
    gate.set()
    assert waiting.wait(windows=waiting.n_windows, timeout=120) and waiting.complete
    last_a = max(i for i, r in enumerate(served) if r == a)
    before = served[:last_a + 1]
    # a's first group may be stopped once by b's requests arriving while it runs (issue 30's preemption)
    assert len(pg.groups) <= before.count(a) <= len(pg.groups) + 1
    assert set(before) <= {a, busy[-1].removal}  # b's replaced requests wait; b's latest only had its turns
    assert before.count(busy[-1].removal) <= len(pg.groups) + 1
    assert np.allclose(waiting.nll(), pg.evaluate(Removal.of(blocks=[1]), memo=False).nll, rtol=1e-6, atol=1e-7)


def test_a_rerun_asking_again_for_the_same_removal_does_not_stop_it(tiny):
    """A page asks for its removal on every run: asking again for the owner's current
    removal must not restart the group under way (four sessions rerunning would otherwise
    stop every group before it ends)."""
    removal = Removal.of(attn=[1])
    pg, _, entered, release, calls = paused_after_first_chunk(tiny, removal)
    job = pg.request(removal, owner="s")
    assert entered.wait(60)
    assert pg.request(removal, owner="s") is job
    release.set()
    assert job.wait(windows=job.n_windows, timeout=120) and job.complete
    assert calls == [0, 1]
