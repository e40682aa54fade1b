"""The trained semantic EQ: words in, a valid EQ setting out; and its MLflow model.

:class:`SemanticEQ` bundles a trained model with its two normalisers and the term
centroids (each word's mean latent over its training rows). A *blend* of words
(``warm=0.7,bright=0.3``) mixes the words' centroids in the latent space and decodes the
mix, so that a blend stays in the learned space (mixing decoded parameters would not);
a morph between two words at position ``p`` is the blend ``{first: 1-p, second: p}``. The
*amount* scales the band gains of the result (``-1`` gives the word's opposite curve).

What ``kedro run`` logs and registers in MLflow (``<design>_semantic_eq``) is a
``pyfunc`` model of the *loader-module* kind: its folder holds the model file (config and
weights as plain tensors, :mod:`neural_eq_morphing.models.storage`), the normalisers and
the centroids as JSON; no pickled object at all. ``mlflow.pyfunc.load_model`` imports this
module from the installed package and calls :func:`_load_pyfunc`, which reads the weights
with ``torch.load(weights_only=True)``: a tampered file fails to load instead of running
its payload.

Contract of ``predict`` (the model's MLflow signature): one row per request with
``words`` (a word or a blend), and optionally ``morph_to`` (a second word or blend),
``position`` (0 … 1 along the morph) and ``amount`` (default 1); out, the 13 SAFE-DB
parameters in plug-in units (dB, Hz, Q). Knows nothing of Kedro.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.models.signature import ModelSignature
from mlflow.types.schema import AnyType, ColSpec, Schema

from neural_eq_morphing.eq.audio import scale_gains
from neural_eq_morphing.eq.normalisers import normaliser_from_dict
from neural_eq_morphing.eq.parameters import LOWER_LIMITS, PARAMETER_NAMES, UPPER_LIMITS
from neural_eq_morphing.errors import UserError
from neural_eq_morphing.models.network import SemanticEQModel
from neural_eq_morphing.models.sampling import sample_latents, spread_columns
from neural_eq_morphing.models.storage import read_model, write_model

MODEL_FILE = "model.pt"
FEATURE_NORMALISER_FILE = "feature_normaliser.json"
DECODER_NORMALISER_FILE = "decoder_normaliser.json"
CENTROIDS_FILE = "term_centroids.json"
DECODED_PREFIX = "decoded_"


class WordsError(UserError, ValueError):
    """A blend of words cannot be made (unknown word, bad weight); the message says why."""


def latent_names(latent_dim: int) -> list[str]:
    """``latent_00``, ``latent_01``, … (as in the latent-embeddings table)."""
    return [f"latent_{index:02d}" for index in range(latent_dim)]


def parse_blend(text: str) -> dict[str, float]:
    """``"warm"`` → ``{"warm": 1}``; ``"warm=0.7, bright=0.3"`` → the weights as given.

    Raises:
        WordsError: An empty entry, a weight that is not a number, or a word twice.
    """
    blend: dict[str, float] = {}
    for entry in str(text).split(","):
        word, _, weight = entry.partition("=")
        word = word.strip().lower()
        if not word:
            raise WordsError(
                f"empty word in {text!r}; expected e.g. 'warm' or 'warm=0.7,bright=0.3'"
            )
        if word in blend:
            raise WordsError(f"{word!r} appears twice in {text!r}")
        try:
            blend[word] = float(weight) if weight.strip() else 1.0
        except ValueError:
            raise WordsError(f"the weight of {word!r} in {text!r} is not a number") from None
    return blend


@dataclass(frozen=True)
class SemanticEQ:
    """A trained model, its normalisers and its term centroids: words to EQ settings.

    Attributes:
        model: The trained module (eval mode).
        feature_normaliser: Plug-in units -> the model's input features (a dict).
        decoder_normaliser: Its inverse maps the decoder's output to plug-in units.
        term_centroids: One row per word: ``term``, ``n_rows`` and ``latent_*``.
    """

    model: SemanticEQModel
    feature_normaliser: Mapping[str, Any]
    decoder_normaliser: Mapping[str, Any]
    term_centroids: pd.DataFrame

    @property
    def latent_dim(self) -> int:
        """Size of the latent space."""
        return int(self.model.model_config["latent_dim"])

    @property
    def words(self) -> list[str]:
        """The words the model knows, most examples first."""
        return self.term_centroids["term"].astype(str).tolist()

    def _centroid(self, word: str) -> np.ndarray:
        rows = self.term_centroids[self.term_centroids["term"] == word]
        if rows.empty:
            close = difflib.get_close_matches(word, self.words, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else "."
            raise WordsError(f"unknown word {word!r}{hint} Known words: {', '.join(self.words)}")
        return rows[latent_names(self.latent_dim)].to_numpy(np.float64)[0]

    def blend_latent(self, blend: Mapping[str, float]) -> np.ndarray:
        """The weighted mean of the words' centroids (weights normalised to sum 1).

        Raises:
            WordsError: An unknown word, a negative weight, or weights summing to zero.
        """
        if not blend:
            raise WordsError(f"no words given; known words: {', '.join(self.words)}")
        negative = [f"{word}={weight:g}" for word, weight in blend.items() if weight < 0]
        if negative or not all(math.isfinite(w) for w in blend.values()):
            raise WordsError(
                f"weights must be finite and not negative, got {', '.join(negative) or blend}; "
                "use a negative amount for a word's opposite"
            )
        total = sum(blend.values())
        if total <= 0:
            raise WordsError(f"the weights sum to zero in {blend}; give at least one a weight > 0")
        return sum(weight / total * self._centroid(word) for word, weight in blend.items())

    def decode(self, latent: np.ndarray) -> np.ndarray:
        """Decode latents ``(n, latent_dim)`` to settings ``(n, 13)`` inside the plug-in limits."""
        with torch.no_grad():
            output = self.model.decode(torch.tensor(np.atleast_2d(latent), dtype=torch.float32))
        values = normaliser_from_dict(self.decoder_normaliser).inverse_transform(
            output.numpy().astype(np.float64)
        )
        return np.clip(np.nan_to_num(values), LOWER_LIMITS, UPPER_LIMITS)

    def preset(
        self,
        words: Mapping[str, float] | str,
        *,
        morph_to: Mapping[str, float] | str | None = None,
        position: float = 0.0,
        amount: float = 1.0,
    ) -> np.ndarray:
        """The EQ setting (13 values in plug-in units) for a word, a blend or a morph.

        Args:
            words: A word, a blend (``"warm=0.7,bright=0.3"``) or its mapping.
            morph_to: Morph from ``words`` towards this word or blend.
            position: Where along the morph, 0 (``words``) to 1 (``morph_to``).
            amount: Scale on the band gains; negative gives the opposite curve.
        """
        first = parse_blend(words) if isinstance(words, str) else dict(words)
        latent = self.blend_latent(first)
        if morph_to is not None:
            if not 0.0 <= position <= 1.0:
                raise WordsError(f"the morph position must be within 0 … 1, got {position:g}")
            second = parse_blend(morph_to) if isinstance(morph_to, str) else dict(morph_to)
            latent = (1.0 - position) * latent + position * self.blend_latent(second)
        if not math.isfinite(amount):
            raise WordsError(f"the amount must be a finite number, got {amount}")
        return scale_gains(self.decode(latent)[0], amount)

    def _region(self, word: str) -> tuple[np.ndarray, np.ndarray]:
        centroid = self._centroid(word)
        columns = spread_columns(latent_names(self.latent_dim))
        if not set(columns) <= set(self.term_centroids.columns):
            raise WordsError(
                "this model was saved without its words' spread, so it cannot draw samples; "
                "train it again with `kedro run`"
            )
        rows = self.term_centroids[self.term_centroids["term"] == word]
        return centroid, rows[columns].to_numpy(np.float64)[0]

    def _blend_samples(
        self, blend: Mapping[str, float], count: int, rng: np.random.Generator
    ) -> np.ndarray:
        """Draws of each word's region, mixed with the blend's weights ``(count, latent_dim)``."""
        self.blend_latent(blend)  # the same checks of words and weights as a single preset
        total = sum(blend.values())
        return sum(
            weight
            / total
            * sample_latents(*self._region(word), count, rng, bounded=not self.model.variational)
            for word, weight in blend.items()
        )

    def sample_presets(
        self,
        words: Mapping[str, float] | str,
        *,
        count: int,
        seed: int,
        morph_to: Mapping[str, float] | str | None = None,
        position: float = 0.0,
        amount: float = 1.0,
    ) -> np.ndarray:
        """``count`` different settings ``(count, 13)`` for a word, a blend or a morph.

        Each word's latent point is drawn from its region
        (:mod:`~neural_eq_morphing.models.sampling`) instead of being its centroid; a
        blend or a morph mixes independent draws of its words with its weights. The
        same ``seed`` gives the same settings.

        Raises:
            WordsError: As :meth:`preset`, a count below 1, or a model saved without its
                words' spread.
        """
        if int(count) < 1:
            raise WordsError(f"the number of samples must be at least 1, got {count}")
        if not math.isfinite(amount):
            raise WordsError(f"the amount must be a finite number, got {amount}")
        rng = np.random.default_rng(int(seed))
        first = parse_blend(words) if isinstance(words, str) else dict(words)
        latent = self._blend_samples(first, int(count), rng)
        if morph_to is not None:
            if not 0.0 <= position <= 1.0:
                raise WordsError(f"the morph position must be within 0 … 1, got {position:g}")
            second = parse_blend(morph_to) if isinstance(morph_to, str) else dict(morph_to)
            latent = (1.0 - position) * latent + position * self._blend_samples(
                second, int(count), rng
            )
        return np.stack([scale_gains(setting, amount) for setting in self.decode(latent)])

    def encode_settings(self, settings: pd.DataFrame) -> pd.DataFrame:
        """Encode settings in plug-in units; their latents and reconstructions.

        Raises:
            ValueError: When a parameter column is missing.
        """
        missing = [name for name in PARAMETER_NAMES if name not in settings.columns]
        if missing:
            raise ValueError(
                f"the input lacks the parameter columns {missing}; expected the 13 SAFE-DB "
                f"parameters in plug-in units: {', '.join(PARAMETER_NAMES)}"
            )
        values = settings[list(PARAMETER_NAMES)].to_numpy(dtype=np.float64)
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

    def predict(
        self, model_input: pd.DataFrame, params: Mapping[str, Any] | None = None
    ) -> pd.DataFrame:
        """EQ settings for rows of requests (the MLflow contract; see the module doc).

        A request without ``samples`` gets one row, its preset; one with ``samples: n``
        gets ``n`` rows drawn from its words' regions (:meth:`sample_presets`, seeded by
        its ``seed``, default 0). When any request asks for samples, the answer starts
        with the columns ``request`` (the request's row number) and ``sample`` (0 … n-1;
        0 for a request's only row when it asked for none); otherwise it is exactly the
        13 parameter columns.

        Args:
            model_input: Columns ``words`` and optionally ``morph_to``, ``position``,
                ``amount``, ``samples`` and ``seed``.
            params: Not used (MLflow passes inference parameters here).

        Raises:
            MlflowException: An invalid request (an unknown word, a bad weight, ``samples``
                not a whole number of at least 1, ``seed`` not a whole number of at least 0):
                HTTP 400 when served.
        """
        frame = pd.DataFrame(model_input)
        try:
            if "words" not in frame.columns:
                raise WordsError(
                    "each request needs a 'words' column (e.g. 'warm' or "
                    "'warm=0.7,bright=0.3'), and optionally 'morph_to', 'position', 'amount', "
                    "'samples' and 'seed'"
                )
            blocks, sampled = [], False
            for request in frame.to_dict("records"):
                morph_to = request.get("morph_to")
                options = {
                    "morph_to": None if _absent(morph_to) else str(morph_to),
                    "position": _number(request.get("position"), 0.0),
                    "amount": _number(request.get("amount"), 1.0),
                }
                count = _whole(request.get("samples"), "samples", minimum=1)
                if count is None:
                    blocks.append(self.preset(request["words"], **options)[np.newaxis])
                else:
                    seed = _whole(request.get("seed"), "seed", minimum=0) or 0
                    blocks.append(
                        self.sample_presets(request["words"], count=count, seed=seed, **options)
                    )
                    sampled = True
        except WordsError as error:  # a bad request, not a server fault: HTTP 400 when served
            raise MlflowException.invalid_parameter_value(str(error)) from error
        values = np.concatenate(blocks) if blocks else np.empty((0, len(PARAMETER_NAMES)))
        answers = pd.DataFrame(values, columns=PARAMETER_NAMES)
        if sampled:
            sizes = [len(block) for block in blocks]
            answers.insert(0, "sample", np.concatenate([np.arange(size) for size in sizes]))
            answers.insert(0, "request", np.repeat(np.arange(len(sizes)), sizes))
        return answers

    def get_raw_model(self) -> SemanticEQ:
        """This object itself (what ``PyFuncModel.get_raw_model()`` returns)."""
        return self

    @staticmethod
    def signature() -> ModelSignature:
        """The MLflow signature of :meth:`predict` (``request`` and ``sample`` only with samples).

        ``samples`` and ``seed`` are whole numbers that :meth:`predict` checks itself (type
        ``Any`` here): as ``long``, MLflow would refuse a batch where only some requests
        give them (the others' missing values make the column a float) and would truncate
        ``2.5`` to 2 before :meth:`predict` could refuse it; as ``double`` it would refuse
        a plain integer column from Python.
        """
        return ModelSignature(
            inputs=Schema(
                [
                    ColSpec("string", "words"),
                    ColSpec("string", "morph_to", required=False),
                    ColSpec("double", "position", required=False),
                    ColSpec("double", "amount", required=False),
                    ColSpec(AnyType(), "samples", required=False),
                    ColSpec(AnyType(), "seed", required=False),
                ]
            ),
            outputs=Schema(
                [
                    ColSpec("long", "request", required=False),
                    ColSpec("long", "sample", required=False),
                    *(ColSpec("double", name) for name in PARAMETER_NAMES),
                ]
            ),
        )

    def save(self, folder: Path) -> None:
        """Write the model file, the normalisers and the centroids into ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / MODEL_FILE, "wb") as sink:
            write_model(self.model, sink)
        documents = {
            FEATURE_NORMALISER_FILE: dict(self.feature_normaliser),
            DECODER_NORMALISER_FILE: dict(self.decoder_normaliser),
            CENTROIDS_FILE: self.term_centroids.to_dict("records"),
        }
        for name, payload in documents.items():
            (folder / name).write_text(json.dumps(payload, indent=1), encoding="utf-8")

    @classmethod
    def load(cls, folder: Path | str) -> SemanticEQ:
        """Read a folder written by :meth:`save` (weights only: no pickled code runs)."""
        folder = Path(folder)
        with open(folder / MODEL_FILE, "rb") as source:
            model = read_model(source, str(folder / MODEL_FILE))

        def document(name: str) -> Any:
            return json.loads((folder / name).read_text(encoding="utf-8"))

        return cls(
            model,
            document(FEATURE_NORMALISER_FILE),
            document(DECODER_NORMALISER_FILE),
            pd.DataFrame(document(CENTROIDS_FILE)),
        )


def _absent(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value == ""


def _number(value: Any, default: float) -> float:
    return default if _absent(value) else float(value)


def _whole(value: Any, field: str, minimum: int) -> int | None:
    """A request's whole-number field (``samples``, ``seed``); ``None`` when not given.

    Raises:
        WordsError: Not a whole number, or below ``minimum``.
    """
    if _absent(value):
        return None
    number = value.item() if isinstance(value, np.generic) else value
    if (
        isinstance(number, bool)
        or not isinstance(number, int | float)
        or not math.isfinite(number)
        or number != int(number)
        or number < minimum
    ):
        raise WordsError(f"'{field}' must be a whole number of at least {minimum}, got {value!r}")
    return int(number)


def _load_pyfunc(data_path: str) -> SemanticEQ:
    """MLflow's entry point for loader-module models: rebuild from the model's data folder."""
    return SemanticEQ.load(data_path)
