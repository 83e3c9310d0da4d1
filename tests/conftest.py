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


MARKERS = {
    "soak": "a long soak or release measurement, run only with --soak (make soak, make coldstart)",
    "browser": "drives a real server in headless Chromium (every test under tests/e2e/; set by this conftest)",
    "default_model": "loads the embedded default model (every test using the default_model fixture; set here)",
    "slow": "a tier that takes minutes: integration (default model) and the architecture matrix (set here)",
}
SLOW_TIERS = ("integration", "arch", "e2e")


def pytest_configure(config):
    config.addinivalue_line("markers", "soak: " + MARKERS["soak"])
    for name in ("browser", "default_model", "slow"):
        config.addinivalue_line("markers", f"{name}: {MARKERS[name]}")
    config.option.strict_markers = True  # a misspelt marker is an error, not a silent no-op


def pytest_collection_modifyitems(config, items):
    """Mark each test by what it needs (so `-m "not browser"` or `-m "not slow"` select
    a quick subset; `make test` runs everything), and skip soak tests without --soak."""
    skip = pytest.mark.skip(reason="soak test: run with --soak (make soak)")
    for item in items:
        tier = Path(str(item.fspath)).relative_to(ROOT / "tests").parts[0]
        if tier == "e2e":
            item.add_marker(pytest.mark.browser)
        if tier in SLOW_TIERS:
            item.add_marker(pytest.mark.slow)
        if "default_model" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.default_model)
        if "soak" in item.keywords and not config.getoption("--soak"):
            item.add_marker(skip)
