"""A tiny comparison through the real nodes, for the node and report tests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from neural_eq_morphing.eq.parameters import PARAMETER_NAMES
from neural_eq_morphing.pipelines.compare.nodes import (
    configurations_of,
    fit_folds,
    make_folds,
    run_baselines,
    run_configurations,
)
from neural_eq_morphing.pipelines.data_processing.nodes import split_by_contributor
from tests.conftest import SMALL_EVALUATION, random_settings

TINY_COMPARE = {
    "n_seeds": 2,
    "first_seed": 1,
    "epochs": 2,
    "configurations": {},
    "reference_design": "log2",
    "claimed": {"log1": {"silhouette": -0.5}, "log2": {"silhouette": 0.07}},
    "questions": [
        {"metric": "probe_auc", "baseline": "parameters"},
        {"metric": "energy_distance_db", "baseline": "resampled_presets"},
    ],
    "folds": {"min_rows": 1000, "k": 2, "validation_fraction": 0.2, "seed": 0},
    "statistics": {"confidence": 0.95, "alpha": 0.05, "power": 0.8, "seed": 0},
}


def tiny_settings() -> pd.DataFrame:
    """180 random settings of 3 terms from 15 contributors."""
    rng = np.random.default_rng(3)
    n = 180
    settings = pd.DataFrame(random_settings(rng, n), columns=list(PARAMETER_NAMES))
    settings.insert(0, "term", ["warm", "bright", "airy"] * (n // 3))
    settings.insert(0, "contributor_id", [f"c{i % 15:04d}" for i in range(n)])
    settings.insert(0, "entry_id", np.arange(n))
    return settings


def compared_tiny(designs: Mapping[str, Any], compare: Mapping[str, Any]) -> tuple:
    """Run the comparison's nodes on :func:`tiny_settings`.

    Returns:
        ``settings, configurations, fold_table, contexts, baselines`` followed by the
        outputs of ``run_configurations`` (fold metrics, reproduction metrics, histories,
        examples, timings).
    """
    settings = tiny_settings()
    configurations = configurations_of(designs, compare)
    fold_table = make_folds(settings, compare)
    contexts = fit_folds(settings, fold_table, SMALL_EVALUATION)
    reproduction, _ = split_by_contributor(
        settings, {"fractions": {"train": 0.6, "validation": 0.2, "test": 0.2}, "seed": 0}
    )
    outputs = run_configurations(
        settings,
        fold_table,
        contexts,
        settings,
        reproduction,
        configurations,
        SMALL_EVALUATION,
        compare,
    )
    baselines = run_baselines(contexts, designs)
    return settings, configurations, fold_table, contexts, baselines, *outputs
