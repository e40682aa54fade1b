"""The trained semantic EQ as an MLflow ``pyfunc`` model that loads without pickle.

What ``kedro run`` logs to MLflow (``<design>_model`` in the run's Models tab) is a
``pyfunc`` model of the *loader-module* kind: its folder holds the model file (config and
weights as plain tensors, :mod:`neural_eq_morphing.models.storage`) and the two
normalisers as JSON; no pickled object at all. ``mlflow.pyfunc.load_model`` imports this
module from the installed package and calls :func:`_load_pyfunc`, which reads the weights
with ``torch.load(weights_only=True)``: a tampered file fails to load instead of running
its payload.

Contract of ``predict`` (also the model's MLflow signature): a table with the 13 SAFE-DB
parameters in plug-in units (dB, Hz, Q; columns named as in
:data:`~neural_eq_morphing.eq.parameters.PARAMETER_NAMES`) in, a table out with the
setting's latent coordinates (``latent_00`` …) and its reconstruction in plug-in units
(``decoded_<parameter>``). Knows nothing of Kedro.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from mlflow.models.signature import ModelSignature
from mlflow.types.schema import ColSpec, Schema

from neural_eq_morphing.eq.normalisers import normaliser_from_dict
from neural_eq_morphing.eq.parameters import PARAMETER_NAMES
from neural_eq_morphing.models.modules import SemanticEQModel
from neural_eq_morphing.models.storage import read_model, write_model

MODEL_FILE = "model.pt"
FEATURE_NORMALISER_FILE = "feature_normaliser.json"
DECODER_NORMALISER_FILE = "decoder_normaliser.json"
DECODED_PREFIX = "decoded_"


def latent_names(latent_dim: int) -> list[str]:
    """``latent_00``, ``latent_01``, … (as in the latent-embeddings table)."""
    return [f"latent_{index:02d}" for index in range(latent_dim)]


@dataclass(frozen=True)
class SemanticEQ:
    """A trained model with the normalisers that turn it into plug-in units in and out.

    Attributes:
        model: The trained module (eval mode).
        feature_normaliser: Plug-in units -> the model's input features (a dict).
        decoder_normaliser: Its inverse maps the decoder's output to plug-in units.
    """

    model: SemanticEQModel
    feature_normaliser: Mapping[str, Any]
    decoder_normaliser: Mapping[str, Any]

    @property
    def latent_dim(self) -> int:
        """Size of the latent space."""
        return int(self.model.model_config["latent_dim"])

    def save(self, folder: Path) -> None:
        """Write the model file and the two normalisers into ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / MODEL_FILE, "wb") as sink:
            write_model(self.model, sink)
        for name, payload in (
            (FEATURE_NORMALISER_FILE, self.feature_normaliser),
            (DECODER_NORMALISER_FILE, self.decoder_normaliser),
        ):
            (folder / name).write_text(json.dumps(dict(payload), indent=1), encoding="utf-8")

    @classmethod
    def load(cls, folder: Path | str) -> SemanticEQ:
        """Read a folder written by :meth:`save` (weights only: no pickled code runs)."""
        folder = Path(folder)
        with open(folder / MODEL_FILE, "rb") as source:
            model = read_model(source, str(folder / MODEL_FILE))
        normalisers = [
            json.loads((folder / name).read_text(encoding="utf-8"))
            for name in (FEATURE_NORMALISER_FILE, DECODER_NORMALISER_FILE)
        ]
        return cls(model, *normalisers)

    def get_raw_model(self) -> SemanticEQ:
        """This object itself (what ``PyFuncModel.get_raw_model()`` returns)."""
        return self

    def signature(self) -> ModelSignature:
        """The MLflow signature of :meth:`predict`."""
        outputs = [*latent_names(self.latent_dim), *(DECODED_PREFIX + n for n in PARAMETER_NAMES)]
        return ModelSignature(
            inputs=Schema([ColSpec("double", name) for name in PARAMETER_NAMES]),
            outputs=Schema([ColSpec("double", name) for name in outputs]),
        )

    def predict(
        self, model_input: pd.DataFrame, params: Mapping[str, Any] | None = None
    ) -> pd.DataFrame:
        """Encode EQ settings in plug-in units; return their latents and reconstructions.

        Args:
            model_input: One row per setting, the 13 parameter columns (others ignored).
            params: Not used (MLflow passes inference parameters here).

        Raises:
            ValueError: When a parameter column is missing.
        """
        frame = pd.DataFrame(model_input)
        missing = [name for name in PARAMETER_NAMES if name not in frame.columns]
        if missing:
            raise ValueError(
                f"the input lacks the parameter columns {missing}; expected the 13 SAFE-DB "
                f"parameters in plug-in units: {', '.join(PARAMETER_NAMES)}"
            )
        values = frame[list(PARAMETER_NAMES)].to_numpy(dtype=np.float64)
        features = normaliser_from_dict(self.feature_normaliser).transform(values)
        with torch.no_grad():
            latent = self.model.encode(torch.tensor(features, dtype=torch.float32))
            output = self.model.decode(latent).numpy().astype(np.float64)
        decoded = normaliser_from_dict(self.decoder_normaliser).inverse_transform(output)
        return pd.concat(
            [
                pd.DataFrame(
                    latent.numpy().astype(np.float64), columns=latent_names(self.latent_dim)
                ),
                pd.DataFrame(decoded, columns=[DECODED_PREFIX + n for n in PARAMETER_NAMES]),
            ],
            axis=1,
        )


def _load_pyfunc(data_path: str) -> SemanticEQ:
    """MLflow's entry point for loader-module models: rebuild from the model's data folder."""
    return SemanticEQ.load(data_path)
