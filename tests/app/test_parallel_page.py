"""The Attention vs MLP page labels a parallel attention/MLP architecture."""
import pytest

from apptest import open_app
from tiny import build_tiny_parallel_model


@pytest.fixture(scope="module")
def neox_dir(tmp_path_factory):
    return build_tiny_parallel_model(tmp_path_factory.mktemp("neox") / "tiny-neox")


def test_attention_vs_mlp_page_labels_parallel(neox_dir, isolated_cache):
    at = open_app("sublayers", model=str(neox_dir), timeout=300)
    assert any("Parallel attention and MLP" in i.value for i in at.info), [i.value for i in at.info]
