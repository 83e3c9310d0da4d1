"""The weight fingerprint depends on the weights and output-relevant config only (issue 18)."""
from __future__ import annotations

import shutil

import torch


def test_same_weights_in_two_folders_agree_and_a_changed_weight_differs(tiny_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    from analysis.model.loading import get_model
    copy = tmp_path / "elsewhere" / "copy-of-tiny"
    shutil.copytree(tiny_dir, copy)
    changed = tmp_path / "changed"
    shutil.copytree(tiny_dir, changed)
    weights = load_file(changed / "model.safetensors")
    name = sorted(k for k in weights if k.endswith("mlp.down_proj.weight"))[1]
    weights[name][5, 7] += 1e-3  # one entry of one matrix
    save_file(weights, changed / "model.safetensors", metadata={"format": "pt"})

    original = get_model(str(tiny_dir), "cpu").fingerprint
    assert get_model(str(copy), "cpu").fingerprint == original
    assert get_model(str(changed), "cpu").fingerprint != original


def test_folder_path_and_bookkeeping_do_not_enter_the_fingerprint():
    from analysis.model.loading import fingerprint_model
    layer = torch.nn.Linear(4, 3)
    base = {"hidden_size": 4, "_name_or_path": "/a/b", "transformers_version": "5.0"}
    moved = base | {"_name_or_path": "/c/d", "transformers_version": "5.1"}
    assert fingerprint_model(layer, base) == fingerprint_model(layer, moved)
    assert fingerprint_model(layer, base) != fingerprint_model(layer, base | {"hidden_size": 5})
