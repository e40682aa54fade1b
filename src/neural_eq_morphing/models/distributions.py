"""Distances between two sets of EQ curves; no Kedro.

Energy distance, MMD, and k-NN precision, recall and coverage.

Each set is a stack of dB responses on the response grid ``(n, n_points)``; the distance
between two curves is their RMS dB difference (the Euclidean distance over
``sqrt(n_points)``), the unit of every dB metric of the project. These compare a
generator's *draws* for a word with the word's held-out settings: unlike the distance to
the nearest real setting, they penalise a generator that collapses to one point (a point
mass has no recall and a large energy distance from a spread-out target), as well as one
that spreads where the data are not.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist


def rms_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """RMS dB distances between every curve of ``a`` ``(n, p)`` and of ``b`` ``(m, p)``."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return cdist(a, b) / np.sqrt(a.shape[1])


def _within_mean(distances: np.ndarray) -> float:
    """Mean of the off-diagonal entries (the U-statistic of a set with itself)."""
    n = len(distances)
    return float((distances.sum() - np.trace(distances)) / (n * (n - 1)))


def energy_distance(samples: np.ndarray, target: np.ndarray) -> float:
    """``2E|X−Y| − E|X−X'| − E|Y−Y'|`` (dB), within-set terms as U-statistics.

    Zero in expectation when both sets come from one distribution; needs two curves in
    each set.
    """
    cross = rms_distances(samples, target).mean()
    return float(
        2.0 * cross
        - _within_mean(rms_distances(samples, samples))
        - _within_mean(rms_distances(target, target))
    )


def mmd_bandwidth(target: np.ndarray) -> float:
    """The median RMS dB distance among the target's curves (the kernel's bandwidth)."""
    distances = rms_distances(target, target)
    upper = distances[np.triu_indices(len(distances), k=1)]
    return float(np.median(upper)) if upper.size else float("nan")


def mmd(samples: np.ndarray, target: np.ndarray, bandwidth: float) -> float:
    """Unbiased squared MMD with the Gaussian kernel ``exp(-d² / (2 h²))``, ``h = bandwidth``.

    Needs two curves in each set; ``bandwidth`` must be positive (NaN otherwise).
    """
    if not bandwidth > 0:
        return float("nan")

    def kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.exp(-(rms_distances(a, b) ** 2) / (2.0 * bandwidth**2))

    return float(
        _within_mean(kernel(samples, samples))
        + _within_mean(kernel(target, target))
        - 2.0 * kernel(samples, target).mean()
    )


def _knn_radii(points: np.ndarray, k: int) -> np.ndarray:
    """Each point's distance to its k-th nearest other point of the same set."""
    distances = rms_distances(points, points)
    np.fill_diagonal(distances, np.inf)
    return np.sort(distances, axis=1)[:, k - 1]


def knn_scores(samples: np.ndarray, target: np.ndarray, k: int) -> dict[str, float]:
    """k-NN precision and recall (Kynkäänniemi et al. 2019) and coverage (Naeem et al. 2020).

    * precision: the share of draws within the k-NN radius of at least one target curve;
    * recall: the share of target curves within the k-NN radius of at least one draw (a
      point mass has radius 0, so its recall is 0);
    * coverage: the share of target curves whose own k-NN ball holds at least one draw.

    Needs more than ``k`` curves in each set (NaN otherwise).
    """
    nan = dict.fromkeys(("knn_precision", "knn_recall", "knn_coverage"), float("nan"))
    if len(samples) <= k or len(target) <= k:
        return nan
    target_radii, sample_radii = _knn_radii(target, k), _knn_radii(samples, k)
    cross = rms_distances(samples, target)  # (n_samples, n_target)
    return {
        "knn_precision": float(np.mean((cross <= target_radii[None, :]).any(axis=1))),
        "knn_recall": float(np.mean((cross <= sample_radii[:, None]).any(axis=0))),
        "knn_coverage": float(np.mean((cross <= target_radii[None, :]).any(axis=0))),
    }


def distribution_scores(samples: np.ndarray, target: np.ndarray, k: int) -> dict[str, float]:
    """Every distance of this module between draws and target curves, by metric name.

    ``energy_distance_db``, ``mmd`` (bandwidth from the target alone, so it is the same for
    every generator measured against this target), ``knn_precision``, ``knn_recall``,
    ``knn_coverage``; NaN where a set is too small.
    """
    if len(samples) < 2 or len(target) < 2:
        scores = {"energy_distance_db": float("nan"), "mmd": float("nan")}
    else:
        scores = {
            "energy_distance_db": energy_distance(samples, target),
            "mmd": mmd(samples, target, mmd_bandwidth(target)),
        }
    return {**scores, **knn_scores(samples, target, k)}
