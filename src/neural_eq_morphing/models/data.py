"""Between tables and models: features and term labels in, the decoder's output space out.

A model-input table (one split, normalised) has ``entry_id``, ``contributor_id``,
``term`` and the 13 features under the plug-in parameters' names
(:data:`~neural_eq_morphing.eq.parameters.PARAMETER_NAMES`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from neural_eq_morphing.eq.normalisers import (
    IdentityNormaliser,
    MinMaxNormaliser,
    ZScoreNormaliser,
    normaliser_from_dict,
)
from neural_eq_morphing.eq.parameters import PARAMETER_NAMES
from neural_eq_morphing.models.config import TrainingConfig
from neural_eq_morphing.models.members import MemberData
from neural_eq_morphing.models.progress import ProgressCallback
from neural_eq_morphing.models.training import TrainingResult, train

PARAMS = list(PARAMETER_NAMES)
#: The splits, in the order the tables are passed around.
SPLITS = ("train", "validation", "test")


def features_of(table: pd.DataFrame) -> np.ndarray:
    """The 13 feature columns of a model-input table, ``(n, 13)`` float32."""
    return table[PARAMS].to_numpy(dtype=np.float32)


def term_codes(*tables: pd.DataFrame) -> list[np.ndarray]:
    """Integer class ids of the tables' terms, over the union of their terms (sorted).

    Returns:
        One ``(n_i,)`` int64 array per table, codes shared across the tables.
    """
    vocabulary = sorted(set().union(*(set(table["term"]) for table in tables)))
    index = {term: code for code, term in enumerate(vocabulary)}
    return [table["term"].map(index).to_numpy(dtype=np.int64) for table in tables]


def decoder_normaliser(
    feature_normaliser: Mapping[str, Any], decoder_head: str, recon_in_consistent_units: bool
) -> dict[str, Any]:
    """The normaliser whose inverse maps a model's decoder output to plug-in units.

    That is the feature normaliser, except for a ``plugin_units`` head trained with its
    loss in consistent units, whose decoder learns to output dB / Hz / Q directly: then
    it is the identity. (Log 1 as published compares its dB/Hz/Q output with z-scored
    targets, so its decoder ends up in z-score space: the feature normaliser's.)

    Args:
        feature_normaliser: JSON description of the feature normaliser.
        decoder_head: ``"plugin_units"`` or ``"normalised"``.
        recon_in_consistent_units: The training option of the same name.

    Returns:
        A JSON description (see :func:`~neural_eq_morphing.eq.normalisers.normaliser_from_dict`).
    """
    if decoder_head == "plugin_units" and recon_in_consistent_units:
        return IdentityNormaliser().to_dict()
    return dict(feature_normaliser)


def check_output_space(feature_normaliser: Mapping[str, Any], config: TrainingConfig) -> None:
    """Check that a design's feature normaliser is the space its decoder and loss assume.

    The ``separate`` heads and the perceptual loss read the decoder output in Log 2's
    normalised space (plug-in limits, log10 on frequencies and Q): the separate frequency
    head is ``log10(Hz)`` scaled by the band's log limits, and the perceptual loss maps
    the output to dB / Hz / Q with that normaliser's inverse.

    Raises:
        ValueError: Either needs that normaliser and the design has another.
    """
    needs = [
        what
        for what, used in (
            ("decoder_head: separate", config.decoder_head == "separate"),
            ("a perceptual_weight above 0", config.perceptual_weight > 0),
        )
        if used
    ]
    if not needs:
        return
    given = dict(feature_normaliser)
    if "columns" in given:  # a built normaliser's description (to_dict)
        wanted = MinMaxNormaliser.from_plugin_limits(("freq", "q")).to_dict()
        if normaliser_from_dict(given).to_dict() == wanted:
            return
    elif given.get("kind") == "minmax" and sorted(given.get("log_kinds", ["freq", "q"])) == [
        "freq",
        "q",
    ]:  # a design's parameter block
        return
    raise ValueError(
        f"{' and '.join(needs)} needs the feature normaliser "
        "{kind: minmax, log_kinds: [freq, q]} (Log 2's: plug-in limits, log10 on "
        f"frequencies and Q), got {given}"
    )


def train_on_tables(
    config: TrainingConfig,
    train_table: pd.DataFrame,
    validation_table: pd.DataFrame,
    feature_normaliser: Mapping[str, Any],
    seeds: list[int],
    progress: ProgressCallback | None = None,
) -> TrainingResult:
    """:func:`~neural_eq_morphing.models.training.train` on normalised model-input tables.

    Labels are the tables' terms; a z-score feature normaliser's mean and std go to the
    loss (a ``plugin_units`` head trained in consistent units needs them).
    """
    member = member_data(train_table, validation_table, feature_normaliser, seed=0)
    return train(
        config,
        member.train_features,
        member.train_labels,
        member.val_features,
        member.val_labels,
        seeds=seeds,
        zscore_mean=member.zscore_mean,
        zscore_std=member.zscore_std,
        progress=progress,
    )


def member_data(
    train_table: pd.DataFrame,
    validation_table: pd.DataFrame,
    feature_normaliser: Mapping[str, Any],
    seed: int,
) -> MemberData:
    """One ensemble member's rows from normalised model-input tables.

    Labels are the tables' terms; a z-score feature normaliser's mean and std go to the
    loss (a ``plugin_units`` head trained in consistent units needs them).
    """
    transform = normaliser_from_dict(feature_normaliser)
    zscore = transform if isinstance(transform, ZScoreNormaliser) else None
    train_labels, validation_labels = term_codes(train_table, validation_table)
    return MemberData(
        seed=seed,
        train_features=features_of(train_table),
        train_labels=train_labels,
        val_features=features_of(validation_table),
        val_labels=validation_labels,
        zscore_mean=None if zscore is None else zscore.mean,
        zscore_std=None if zscore is None else zscore.std,
    )
