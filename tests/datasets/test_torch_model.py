"""The model file: written atomically, a damaged one refused with a clear message."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from kedro.io.core import DatasetError, Version

from neural_eq_morphing.datasets import torch_model
from neural_eq_morphing.datasets.torch_model import TorchModelDataset
from neural_eq_morphing.models.modules import SemanticEQModel


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
