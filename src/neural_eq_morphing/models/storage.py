"""A trained model's file: its config and weights as plain tensors, never pickled code.

``torch.save`` of ``{"format", "model_config", "state_dict"}`` (the state dict one flat
``(1, P)`` parameter, :class:`~neural_eq_morphing.models.network.ParameterLayout`), read
back with
``torch.load(weights_only=True)``, which refuses any pickled object other than tensors
and plain containers: a tampered file fails to load instead of running its payload.
Used by the catalog's ``TorchModelDataset`` and by the MLflow model
(:mod:`neural_eq_morphing.serving`).
"""

from __future__ import annotations

import pickle
from typing import IO

import torch

from neural_eq_morphing.models.network import SemanticEQModel, build_model

MODEL_FORMAT = "neural_eq_morphing.model/2"
#: The first format: the same weights as per-layer ``nn.Linear``/``nn.LayerNorm`` tensors.
LEGACY_MODEL_FORMAT = "neural_eq_morphing.model/1"


class ModelFileError(ValueError):
    """A file is not a readable semantic-EQ model (truncated, corrupted or tampered)."""


def write_model(model: SemanticEQModel, sink: IO[bytes]) -> None:
    """Write ``model``'s config and weights (on CPU) to a binary stream."""
    if not isinstance(model, SemanticEQModel):
        raise TypeError(f"expected a SemanticEQModel to save, got {type(model).__name__}")
    payload = {
        "format": MODEL_FORMAT,
        "model_config": model.model_config,
        "state_dict": {key: value.detach().cpu() for key, value in model.state_dict().items()},
    }
    torch.save(payload, sink)


def read_model(source: IO[bytes], where: str) -> SemanticEQModel:
    """Rebuild a model from a stream written by :func:`write_model` (eval mode).

    Args:
        source: The binary stream.
        where: The file's name or path, for error messages.

    Raises:
        ModelFileError: When the stream is not such a model, or holds anything but
            tensors and plain values (``weights_only`` loading).
    """
    try:
        payload = torch.load(source, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as error:
        raise ModelFileError(
            f"'{where}' cannot be read as a saved semantic-EQ model ({error}); it may be "
            "truncated, corrupted or tampered with. Delete it and run training again."
        ) from error
    formats = (MODEL_FORMAT, LEGACY_MODEL_FORMAT)
    if not isinstance(payload, dict) or payload.get("format") not in formats:
        raise ModelFileError(
            f"'{where}' is not a saved semantic-EQ model (expected format {MODEL_FORMAT})"
        )
    try:
        state = payload["state_dict"]
        if payload["format"] == LEGACY_MODEL_FORMAT:  # rare: a throw-away model for its layout
            layout = build_model(payload["model_config"]).layout
            state = {"flat": layout.flat_from_state_dict(state)[None]}
        if set(state) != {"flat"}:
            raise ValueError(f"expected one tensor 'flat', got {sorted(state)}")
        model = build_model(payload["model_config"], flat=state["flat"])
    except (KeyError, ValueError, RuntimeError, AttributeError) as error:
        raise ModelFileError(
            f"'{where}' holds weights that do not fit its model config ({error})"
        ) from error
    return model.eval()
