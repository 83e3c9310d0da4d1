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
    full = engine.run_lm(engine.removal_lm(default_model, Removal()), taskset, limit=24)
    assert_same_items(full, engine.evaluate_checkpoint(str(default_dir), taskset, limit=24))
    out = apply_plan(make_plan(default_model, MIXED, "manual", {}), default_dir, tmp_path / "pruned")
    pruned = engine.run_lm(engine.removal_lm(default_model, MIXED), taskset, limit=24)
    assert_same_items(pruned, engine.evaluate_checkpoint(str(out), taskset, limit=24))
    assert any(a.loglikelihoods != pytest.approx(b.loglikelihoods, abs=1e-3)
               for a, b in zip(full["layerlab_agreement"].items, pruned["layerlab_agreement"].items))


def test_the_suite_separates_the_full_model_from_a_heavily_pruned_one(default_model, taskset):
    agreement = engine.resolve_tasks(["layerlab_agreement"])
    full = engine.run_lm(engine.removal_lm(default_model, Removal()), agreement)["layerlab_agreement"]
    heavy = engine.run_lm(engine.removal_lm(default_model, HEAVY), agreement)["layerlab_agreement"]
    assert full.n == heavy.n == 240
    assert full.accuracy > 0.85 and heavy.accuracy < 0.65  # measured: 0.954 and 0.454
    counting = engine.resolve_tasks(["layerlab_sequences"])  # the first 60 items count up by one
    full = engine.run_lm(engine.removal_lm(default_model, Removal()), counting, limit=60)["layerlab_sequences"]
    heavy = engine.run_lm(engine.removal_lm(default_model, HEAVY), counting, limit=60)["layerlab_sequences"]
    assert full.accuracy > 0.5 and heavy.accuracy < 0.1
