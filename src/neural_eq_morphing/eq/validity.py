"""Range validity of EQ settings against the plug-in limits (docs/design.md section 6)."""

from __future__ import annotations

from typing import Any

import numpy as np

from neural_eq_morphing.eq.parameters import (
    BANDS,
    LOWER_LIMITS,
    PARAMETERS,
    UPPER_LIMITS,
    out_of_range_mask,
)


def _excess(values: np.ndarray) -> np.ndarray:
    """How far each value lies outside its limits, as a share of the limit range.

    Frequencies and Q are measured on log10 (so 1.6 MHz for a band ending at 20 kHz is
    about 1.9 decades out); gains in dB. Non-finite values get ``inf``; inside is 0.
    """
    log = np.array([p.kind in ("freq", "q") for p in PARAMETERS])
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = np.where(log, np.log10(np.where(values > 0, values, np.nan)), values)
        lower = np.where(log, np.log10(LOWER_LIMITS), LOWER_LIMITS)
        upper = np.where(log, np.log10(UPPER_LIMITS), UPPER_LIMITS)
        excess = np.maximum(lower - scaled, scaled - upper).clip(min=0) / (upper - lower)
    return np.where(np.isfinite(excess), excess, np.inf)


def range_report(settings: np.ndarray, n_worst: int = 5) -> dict[str, Any]:
    """Summarise how many decoded settings lie inside the plug-in limits.

    Args:
        settings: ``(n, 13)`` in plug-in units.
        n_worst: How many of the worst offending values to list.

    Returns:
        ``n_settings``; ``valid_share`` (settings with every parameter inside its limits);
        ``by_band`` (share of settings whose band is fully valid); ``by_kind`` (share of
        gain / frequency / Q values that are valid); ``by_parameter`` (valid share, min and
        max of each parameter); ``worst`` (the values furthest outside, with their limits).
    """
    settings = np.asarray(settings, dtype=np.float64)
    invalid = out_of_range_mask(settings)
    n = len(settings)

    def share_valid(mask: np.ndarray) -> float:
        return float(1.0 - mask.mean()) if n else 1.0

    by_band = {
        band: share_valid(
            invalid[:, [i for i, p in enumerate(PARAMETERS) if p.band == band]].any(1)
        )
        for band in BANDS
    }
    by_kind = {
        kind: share_valid(invalid[:, [i for i, p in enumerate(PARAMETERS) if p.kind == kind]])
        for kind in ("gain", "freq", "q")
    }
    by_parameter = {
        p.name: {
            "valid_share": share_valid(invalid[:, i]),
            "min": float(np.nanmin(settings[:, i])) if n else None,
            "max": float(np.nanmax(settings[:, i])) if n else None,
            "lower_limit": p.minimum,
            "upper_limit": p.maximum,
        }
        for i, p in enumerate(PARAMETERS)
    }
    excess = _excess(settings)
    order = np.argsort(-excess, axis=None, kind="stable")[: max(n_worst, 0)]
    worst = []
    for flat in order:
        row, column = np.unravel_index(flat, excess.shape)
        if excess[row, column] <= 0:
            break
        spec = PARAMETERS[column]
        worst.append(
            {
                "parameter": spec.name,
                "value": float(settings[row, column]),
                "lower_limit": spec.minimum,
                "upper_limit": spec.maximum,
                "unit": spec.unit,
                "row": int(row),
            }
        )
    return {
        "n_settings": n,
        "valid_share": share_valid(invalid.any(1)),
        "by_band": by_band,
        "by_kind": by_kind,
        "by_parameter": by_parameter,
        "worst": worst,
    }
