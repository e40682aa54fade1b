"""The model file: written atomically, a damaged one refused with a clear message."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from kedro.io.core import DatasetError, Version

from neural_eq_morphing.datasets import torch_model
from neural_eq_morphing.datasets.torch_model import TorchModelDataset
from neural_eq_morphing.models.network import SemanticEQModel
from neural_eq_morphing.models.storage import LEGACY_MODEL_FORMAT, MODEL_FORMAT, read_model


def _dataset(root: Path) -> TorchModelDataset:
    return TorchModelDataset(filepath=str(root / "model.pt"), version=Version(None, None))


def _same(a: SemanticEQModel, b: SemanticEQModel) -> bool:
    return all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())


def test_a_save_killed_mid_write_leaves_the_previous_version_newest(tmp_path, monkeypatch):
    first = SemanticEQModel("normalised", seed=1)
    _dataset(tmp_path).save(first)
    time.sleep(0.01)  # the next version gets a later timestamp

    def dies_half_way(payload, sink):
        sink.write(b"PK\x03\x04 half a model")
        raise KeyboardInterrupt  # as a run stopped during its final saves

    monkeypatch.setattr(torch_model.torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        _dataset(tmp_path).save(SemanticEQModel("normalised", seed=2))
    monkeypatch.undo()
    # no model.pt and no .part is left in the new version's folder
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["model.pt"]
    assert _same(_dataset(tmp_path).load(), first)


def test_a_truncated_model_file_is_refused_with_a_clear_message(tmp_path):
    dataset = _dataset(tmp_path)
    dataset.save(SemanticEQModel("normalised", seed=1))
    (saved,) = [path for path in tmp_path.rglob("model.pt") if path.is_file()]
    saved.write_bytes(saved.read_bytes()[:1000])
    with pytest.raises(DatasetError, match="may be truncated, corrupted or tampered with"):
        _dataset(tmp_path).load()


def test_a_file_of_the_first_format_loads_as_the_same_network(tmp_path):
    # Format 1 stored the weights as per-layer nn.Linear/LayerNorm tensors; format 2 stores
    # the one flat parameter. A model written the old way must load to the same model.
    model = SemanticEQModel("plugin_units", seed=4).eval()
    views = model.layout.views(model.flat.detach())
    per_layer = {}
    for piece, entry in model.layout.module_order:
        block = views[entry.name][0, :, piece.start : piece.start + piece.columns]
        per_layer[piece.key] = block.t().clone() if piece.is_weight else block[0].clone()
    path = tmp_path / "old.pt"
    legacy = {"format": LEGACY_MODEL_FORMAT, "model_config": model.model_config}
    torch.save({**legacy, "state_dict": per_layer}, path)
    with path.open("rb") as source:
        loaded = read_model(source, str(path))
    assert torch.equal(loaded.flat, model.flat)
    x = torch.rand(6, 13, generator=torch.Generator().manual_seed(0))
    assert torch.equal(loaded(x)[2], model(x)[2])
    # the current format round-trips through the dataset as before
    _dataset(tmp_path).save(model)
    assert MODEL_FORMAT.endswith("/2")
    assert _same(_dataset(tmp_path).load(), model)
    # weights that do not fit the config are refused with a clear message
    torch.save({**legacy, "state_dict": {"encoder.hidden.weight": torch.zeros(2, 2)}}, path)
    with path.open("rb") as source, pytest.raises(ValueError, match="do not fit its model config"):
        read_model(source, str(path))
