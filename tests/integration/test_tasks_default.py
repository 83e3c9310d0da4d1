"""Task accuracy on the default model: lm-eval in-process with removals equals lm-eval on
its own on the model's directory and on the checkpoint `apply` writes, item by item; the
offline suite separates the full model from a heavily pruned one."""
import pytest

from analysis.model.removal import Removal
from analysis.plans.apply import apply_plan
from analysis.plans.schema import make_plan
from analysis.tasks import engine, suite
from unit.tasks.test_tasks import assert_same_items

MIXED = Removal.of(blocks=[10, 20], attn=[5], mlp=[25])
HEAVY = Removal.of(blocks=range(10, 19))  # 9 of 30 blocks


@pytest.fixture(scope="module")
def taskset(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("LAYERLAB_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    yield engine.resolve_tasks(list(suite.TASKS))
    mp.undo()


def test_in_process_equals_lm_eval_on_the_directory_and_the_apply_checkpoint(default_model, default_dir, taskset,
                                                                             tmp_path):
    full = engine.run_lm(engine.removal_lm(default_model, Removal()), taskset, limit=16)
    assert_same_items(full, engine.evaluate_checkpoint(str(default_dir), taskset, limit=16))
    out = apply_plan(make_plan(default_model, MIXED, "manual", {}), default_dir, tmp_path / "pruned")
    pruned = engine.run_lm(engine.removal_lm(default_model, MIXED), taskset, limit=16)
    assert_same_items(pruned, engine.evaluate_checkpoint(str(out), taskset, limit=16))
    assert any(a.loglikelihoods != pytest.approx(b.loglikelihoods, abs=1e-3)
               for a, b in zip(full["layerlab_agreement"].items, pruned["layerlab_agreement"].items))


def test_the_suite_separates_the_full_model_from_a_heavily_pruned_one(default_model, taskset):
    """On the first items of each task (agreement across an attractor and demonstrative
    number; counting up by one); README's table has the whole suite (0.954 and 0.329 for
    the full model)."""
    runs = {name: [engine.run_lm(engine.removal_lm(default_model, r), engine.resolve_tasks([name]), limit=limit)[name]
                   for r in (Removal(), HEAVY)]
            for name, limit in (("layerlab_agreement", 120), ("layerlab_sequences", 30))}
    full, heavy = runs["layerlab_agreement"]
    assert full.n == heavy.n == 120
    assert full.accuracy > 0.8 and full.accuracy - heavy.accuracy > 0.25
    full, heavy = runs["layerlab_sequences"]
    assert full.accuracy > 0.4 and heavy.accuracy < 0.1
