"""The dynamic-depth oracle's multiple-choice knapsack against brute force, and the
oracle's families on hand-made values."""
import itertools

import numpy as np
import pytest

from analysis.search.dynamic_depth import dynamic_depth, min_total_weight, skip_patterns


def brute_force(weights, values, budget):
    """Every choice of one configuration per group: the least total weight within budget."""
    best = None
    G, C = values.shape
    for choice in itertools.product(range(C), repeat=G):
        value = sum(values[g, c] for g, c in enumerate(choice))
        weight = sum(weights[c] for c in choice)
        if value <= budget + 1e-9 and (best is None or weight < best):
            best = weight
    return best


@pytest.mark.parametrize("seed", range(40))
def test_knapsack_equals_brute_force_on_small_random_instances(seed):
    rng = np.random.default_rng(seed)
    G, C = int(rng.integers(1, 6)), int(rng.integers(1, 6))
    weights = rng.integers(0, 7, C)
    values = np.round(rng.random((G, C)) * 4, 3)
    budget = float(rng.random() * 4 * G)
    expected = brute_force(weights, values, budget)
    got = min_total_weight(weights, values, budget)
    if expected is None:
        assert got is None
        return
    total, chosen = got
    assert total == expected
    assert total == int(weights[chosen].sum())  # the returned choice is the one with that weight
    assert values[np.arange(G), chosen].sum() <= budget + 1e-9


def test_knapsack_trades_windows_against_each_other():
    # two windows, configurations (weight, NLL): the cheap config is bad on window 0, good on window 1
    weights = [2, 4]
    values = np.array([[3.0, 1.0],
                       [1.0, 1.0]])
    assert min_total_weight(weights, values, 2.0) == (6, pytest.approx(np.array([1, 0])))  # full on 0, cheap on 1
    assert min_total_weight(weights, values, 4.0)[0] == 4  # the bad window's loss is absorbed by the budget
    assert min_total_weight(weights, values, 1.5) is None


def test_skip_patterns():
    assert skip_patterns(5) == [frozenset({1, 3}), frozenset({2}), frozenset({3}), frozenset({4})]


def test_oracle_families_on_hand_made_values():
    L = 4
    full = np.array([2.0, 3.0, 1.0])
    # early exit: depth d costs d; window 2 is already right after one block
    exits = np.array([[5.0, 4.0, 2.5, 2.0],
                      [6.0, 3.2, 3.1, 3.0],
                      [1.0, 1.0, 1.0, 1.0]])
    skip_sets = [frozenset(), frozenset({2}), frozenset({1, 2})]
    skips = np.stack([full, full + [0.1, -0.2, 0.0], full + [1.0, 1.0, 1.0]], 1)
    result = dynamic_depth(skip_sets, skips, exits, full, L, tolerance=0.0)
    # exits: window 2 exits after block 0 (saving 0.0); the others need full depth -> (4 + 4 + 1) / 12
    assert result.early_exit.mean_fraction == pytest.approx(9 / 12)
    assert result.early_exit.window_config == ["exit after block 3", "exit after block 3", "exit after block 0"]
    # skipping: window 1 gains 0.2 nats skipping block 2, which pays for window 0 (+0.1); window 2 also skips
    # block 2 (+0.0): 3 + 3 + 3 blocks run
    assert result.skipping.mean_fraction == pytest.approx(9 / 12)
    assert result.skipping.mean_nll <= float(full.mean()) + 1e-12
    loose = dynamic_depth(skip_sets, skips, exits, full, L, tolerance=1.0)
    assert loose.skipping.mean_fraction == pytest.approx(2 / 4)
    assert loose.early_exit.mean_fraction < result.early_exit.mean_fraction
    with pytest.raises(ValueError, match="tolerance"):
        dynamic_depth(skip_sets, skips, exits, full, L, tolerance=-0.1)
