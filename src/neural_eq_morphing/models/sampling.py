"""Several settings for one word: each word's region of a model's latent; no Kedro.

A word's *centroid* (its training rows' mean latent) gives one setting, the typical one.
To give several, a model samples from the word's *region*: the diagonal Gaussian of the
word's training encodings, mean the centroid and, per latent dimension, the standard
deviation of those encodings (its *spread*, stored beside the centroid as ``spread_*``).
For a β-VAE the region is the word's part of the aggregate posterior (the mixture of its
rows' posteriors, the part of the latent its decoder was trained to decode), matched by
mean and variance: the posterior means' variance plus the mean posterior variance; for a
deterministic autoencoder the same rule perturbs around the word's encodings, and the
draws are clipped to the tanh range (−1, 1) its decoder has seen. One rule for every
design keeps the comparison of their samples fair (docs/metrics.md, "Distributions"),
and it is what the command line, the served model and the app draw from, so a user gets
samples of exactly the distribution that was measured.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: The prefix of a term-centroids table's spread columns (``spread_00``, …).
SPREAD_PREFIX = "spread_"
LATENT_PREFIX = "latent_"
POSTERIOR_PREFIX = "posterior_var_"


def spread_columns(latent_columns: list[str]) -> list[str]:
    """``spread_00``, … for ``latent_00``, … (the same order)."""
    return [SPREAD_PREFIX + column.removeprefix(LATENT_PREFIX) for column in latent_columns]


def posterior_columns(latent_columns: list[str]) -> list[str]:
    """``posterior_var_00``, … for ``latent_00``, …: a β-VAE's posterior variances."""
    return [POSTERIOR_PREFIX + c.removeprefix(LATENT_PREFIX) for c in latent_columns]


def word_regions(train_latent: pd.DataFrame, latent_columns: list[str]) -> pd.DataFrame:
    """Each term's centroid and spread over its training rows' encodings.

    Args:
        train_latent: ``term`` and the latent columns of the training rows; for a β-VAE
            also its posterior variances (``posterior_var_*``).
        latent_columns: The latent columns, in order.

    Returns:
        One row per term (index ``term``): ``n_rows``, the latent columns (the mean) and
        the spread columns: the standard deviation of the encodings (0 for a term with one
        row), for a β-VAE that of the word's aggregate posterior, the square root of the
        encodings' variance plus the mean posterior variance (the law of total variance).
    """
    grouped = train_latent.groupby("term")[latent_columns]
    variance = grouped.var(ddof=1).fillna(0.0)
    posterior = posterior_columns(latent_columns)
    if set(posterior) <= set(train_latent.columns):
        within = train_latent.groupby("term")[posterior].mean()
        variance = variance + within.to_numpy()
    spread = np.sqrt(variance)
    spread.columns = spread_columns(latent_columns)
    regions = pd.concat([grouped.mean(), spread], axis=1)
    regions.insert(0, "n_rows", train_latent.groupby("term").size())
    return regions


def sample_latents(
    centroid: np.ndarray,
    spread: np.ndarray,
    count: int,
    rng: np.random.Generator,
    bounded: bool,
) -> np.ndarray:
    """``count`` points of a word's region ``(count, latent_dim)``.

    Args:
        centroid: The word's centroid ``(latent_dim,)``.
        spread: Its per-dimension standard deviation ``(latent_dim,)``.
        count: How many points.
        rng: The random source (seeded by the caller).
        bounded: Clip to (−1, 1), the range of a tanh latent (deterministic models).
    """
    centroid, spread = np.asarray(centroid, np.float64), np.asarray(spread, np.float64)
    points = centroid + spread * rng.standard_normal((int(count), centroid.size))
    return np.clip(points, -1.0, 1.0) if bounded else points
