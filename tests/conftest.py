import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from analysis.core import caches  # noqa: E402 (after the path setup)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    from tiny import build_tiny_model
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture(scope="session")
def tiny(tiny_dir):
    from analysis.model.loading import get_model
    return get_model(str(tiny_dir), "cpu")


@pytest.fixture(scope="session")
def default_model():
    from analysis.model.loading import get_model
    return get_model("default", "cpu")


@pytest.fixture(scope="session")
def default_dir(default_model):
    return Path(default_model.source_dir)


@pytest.fixture(scope="session")
def plain_default(default_dir):
    """An independent plain-transformers copy of the default model (not wrapped by a bridge)."""
    import torch
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(default_dir, dtype=torch.float32).eval()


@pytest.fixture()
def isolated_cache(tmp_path, monkeypatch):
    """A fresh cache directory for tests that write results."""
    monkeypatch.setenv("LAYERLAB_CACHE_DIR", str(tmp_path / "cache"))
    models = Path(ROOT / "cache" / "models")
    (tmp_path / "cache").mkdir()
    if models.exists():
        os.symlink(models, tmp_path / "cache" / "models")
    return tmp_path / "cache"


@pytest.fixture(autouse=True)
def clear_process_caches():
    """Process caches (core.caches: finished jobs, playgrounds, the removal memo, prompts,
    shared windows, ...) live once per process, as in the server: after each test, empty
    them, so no test sees another's state. Loaded models stay (session fixtures own them)."""
    yield
    caches.clear_all(keep=caches.MODELS)


def pytest_addoption(parser):
    parser.addoption("--soak", action="store_true", default=False,
                     help="also run the long soak tests (marked soak; `make soak`, before each release)")


def pytest_configure(config):
    config.addinivalue_line("markers", "soak: a long soak test, run only with --soak (make soak)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--soak"):
        return
    skip = pytest.mark.skip(reason="soak test: run with --soak (make soak)")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)
