"""The metric registry: every metric declared once, with all that defines it; no Kedro.

Each entry holds a metric's name, definition, direction, unit, eligible rows and family.

Both measurements read their metrics from here: the single-split evaluation
(:func:`~neural_eq_morphing.models.evaluation.evaluate_model`, scope ``evaluation``) and
the cross-contributor protocol (:mod:`~neural_eq_morphing.models.protocol`, scope
``protocol``). A metric computed by both (``generation_rms_db``,
``reconstruction_rms_db.mean``) has one definition and one eligibility rule, so the two
give the same number on the same rows. The docs' metric tables (docs/metrics.md) are
rendered from this registry (:func:`markdown_tables`) and a test checks they match.

A name may hold placeholders (``valid_share.<set>``): :func:`spec_of` finds the entry of a
concrete name. Metric dictionaries are combined with :func:`merge_metrics`, which refuses
a name given twice instead of letting the last one win: that silent overwrite once
scored models and baselines of one fold on different terms.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

EVALUATION, PROTOCOL = "evaluation", "protocol"
#: The range of a metric whose unit is ``share``.
_SHARE = (0.0, 1.0)


@dataclass(frozen=True)
class Metric:
    """One metric.

    Attributes:
        name: Its one name (placeholders in ``<...>``).
        definition: What it measures, in a sentence or two.
        better: ``higher``, ``lower``, ``one`` (closest to 1 is best) or ``none`` (a count
            or a reference figure: not judged).
        unit: ``dB``, ``Hz``, ``share`` (in [0, 1]), ``count`` or ``""`` (unitless).
        eligible: Which terms and rows it is measured on.
        scopes: Which measurements compute it (``evaluation``, ``protocol``).
        family: The family of its verdicts (Holm's correction works within one);
            ``None``: not judged.
        baselines: The baselines and references measured on it (protocol), for the docs.
    """

    name: str
    definition: str
    better: str
    unit: str
    eligible: str
    scopes: tuple[str, ...]
    family: str | None = None
    baselines: str = ""

    @property
    def bounds(self) -> tuple[float, float] | None:
        """Its range, when it has one (a share's is [0, 1]); a summary interval respects it."""
        return _SHARE if self.unit == "share" else None

    @property
    def judged(self) -> bool:
        """Whether verdicts are drawn on it (a protocol metric with a family)."""
        return self.family is not None and PROTOCOL in self.scopes


_TEST_PAIR = "the test part's rows of the pair (warm, bright)"
_GENERATION_TERMS = (
    "terms with at least `evaluation.min_test_rows` (5) rows in both the test and the training part"
)
_DISTRIBUTION_TERMS = (
    "terms with at least `evaluation.distribution.min_test_rows` (20) rows in both the test "
    "and the training part; the test rows split in two halves (seeded), the second half "
    "the target"
)
_GENERATORS = (
    "`mean_preset`, `medoid`, `least_squares_preset`, `flat`; `mean_curve` (the word-only "
    "optimum, a reference)"
)
_DISTRIBUTION_REFERENCES = (
    "`held_out_half` (the first half of the held-out settings), `resampled_presets`, "
    "`gaussian_presets`, `mean_preset` (a point mass)"
)
_MORPH_REFERENCES = (
    "`held_out_half`, `resampled_presets` and `gaussian_presets` (midpoints of their draws), "
    "`mean_preset` (the midpoint of the straight blend of the two mean presets, a point mass)"
)
_MORPH_TARGET = (
    "midpoints (α = 0.5) of the pair's morph, drawn, against the second half of the held-out "
    "settings of both words"
)


def _entries() -> list[Metric]:
    e, p, both = (EVALUATION,), (PROTOCOL,), (EVALUATION, PROTOCOL)
    return [
        # ------------------------------------------------------------ range validity
        Metric(
            "valid_share.<set>",
            "share of the set's decoded settings with all 13 parameters inside the limits",
            "higher",
            "share",
            "every decoded setting of the set",
            e,
        ),
        Metric(
            "valid_gain_share.<set>",
            "share of the set's gain values inside their limits",
            "higher",
            "share",
            "every decoded setting of the set",
            e,
        ),
        Metric(
            "valid_frequency_share.<set>",
            "share of the set's frequency values inside their limits",
            "higher",
            "share",
            "every decoded setting of the set",
            e,
        ),
        Metric(
            "valid_q_share.<set>",
            "share of the set's Q values inside their limits",
            "higher",
            "share",
            "every decoded setting of the set",
            e,
        ),
        Metric(
            "valid_band_share.<set>.<band>",
            "share of the set's settings whose band has all its parameters inside the limits",
            "higher",
            "share",
            "every decoded setting of the set",
            e,
        ),
        Metric(
            "max_frequency_hz",
            "highest decoded frequency over the three generated sets and all five bands",
            "none",
            "Hz",
            "`term_centroids`, `interpolations`, `random_latents`",
            e,
        ),
        Metric(
            "min_frequency_hz",
            "lowest decoded frequency over the three generated sets and all five bands",
            "none",
            "Hz",
            "`term_centroids`, `interpolations`, `random_latents`",
            e,
        ),
        # ---------------------------------------------------------------- separation
        Metric(
            "silhouette.<protocol>.<space>",
            "scikit-learn's silhouette, labels = term, in `<space>`: `latent` (the model's) "
            "or `baseline` (the design's normalised 13 parameters)",
            "higher",
            "",
            "`in_sample`: every filtered row; `held_out`: test-split rows of "
            "terms with at least `evaluation.min_test_rows` (5) test rows",
            e,
        ),
        Metric(
            "davies_bouldin.<protocol>.<space>",
            "scikit-learn's Davies–Bouldin index, labels = term, in `<space>`",
            "lower",
            "",
            "as `silhouette.<protocol>.<space>`",
            e,
        ),
        Metric(
            "rows.<protocol>",
            "the number of rows the clustering protocol scored",
            "none",
            "count",
            "as `silhouette.<protocol>.<space>`",
            e,
        ),
        Metric(
            "terms.<protocol>",
            "the number of terms the clustering protocol scored (0 when fewer than two "
            "qualify, and the scores are then undefined)",
            "none",
            "count",
            "as `silhouette.<protocol>.<space>`",
            e,
        ),
        # ------------------------------------------------------------ reconstruction
        Metric(
            "reconstruction_mse",
            "mean squared error between decoder output and input in the design's own "
            "feature space (Log 1's and Log 2's are not comparable)",
            "lower",
            "",
            "every test row",
            e,
        ),
        Metric(
            "reconstruction_rms_db.mean",
            "per test setting, the RMS over the response grid of the dB difference between "
            "the setting's response and its reconstruction's (both clamped to the limits); "
            "the mean over settings",
            "lower",
            "dB",
            "every test row",
            both,
            family="reconstruction",
            baselines="`pca_reconstruction` (PCA with as many components as the latent, "
            "fitted on the training part)",
        ),
        Metric(
            "reconstruction_rms_db.median",
            "the median over settings of the per-setting RMS dB above",
            "lower",
            "dB",
            "every test row",
            e,
        ),
        Metric(
            "reconstruction_rms_db.p95",
            "the 95th percentile over settings of the per-setting RMS dB above",
            "lower",
            "dB",
            "every test row",
            e,
        ),
        # ---------------------------------------------------------------- generation
        Metric(
            "generation_rms_db.<term>",
            "RMS dB between the response of the decoded centroid and the term's mean test curve",
            "lower",
            "dB",
            "every term with test rows and a centroid",
            e,
        ),
        Metric(
            "generation_rms_db",
            "per eligible term, RMS dB between the generated curve and the term's mean test "
            "curve; the mean over terms",
            "lower",
            "dB",
            _GENERATION_TERMS,
            both,
            family="generation",
            baselines=_GENERATORS,
        ),
        Metric(
            "generation_floor_db",
            "split-half noise of the held-out curves: per eligible term, half the RMS dB "
            "between the mean curves of two random halves of its test rows (root mean "
            "square over `evaluation.split_half_repeats` splits), which estimates the RMS "
            "sampling noise of the mean test curve itself; the mean over terms. No generator "
            "that sees only the word can expect a lower `generation_rms_db`",
            "none",
            "dB",
            _GENERATION_TERMS,
            p,
            baselines="`held_out_half`",
        ),
        Metric(
            "generation_skill",
            "1 − `generation_rms_db` / the mean preset's on the same fold",
            "higher",
            "",
            _GENERATION_TERMS,
            p,
            family="generation",
            baselines=_GENERATORS,
        ),
        Metric(
            "recognised_share",
            "share of generated curves that a logistic-regression term classifier on the "
            "training part's dB curves (every 8th point, standardised) assigns to their term",
            "higher",
            "share",
            _GENERATION_TERMS,
            p,
            family="generation",
            baselines=_GENERATORS,
        ),
        Metric(
            "recognised_probability",
            "that classifier's mean probability of the intended term",
            "higher",
            "share",
            _GENERATION_TERMS,
            p,
            family="generation",
            baselines=_GENERATORS,
        ),
        Metric(
            "pair_distance_ratio",
            "RMS dB between the generated warm and bright curves over that between the test "
            "part's mean warm and bright curves",
            "one",
            "",
            "the pair, when both are eligible",
            p,
            family="generation",
            baselines=_GENERATORS,
        ),
        Metric(
            "band_agreement",
            "mean level of each curve in four bands (below 150 Hz, 150–500 Hz, 2–6 kHz, "
            "above 6 kHz): the share of (term, band) whose sign matches the test data's",
            "higher",
            "share",
            _GENERATION_TERMS,
            p,
            family="generation",
            baselines=_GENERATORS,
        ),
        Metric(
            "band_error_db",
            "the mean absolute difference of those band levels from the test data's",
            "lower",
            "dB",
            _GENERATION_TERMS,
            p,
            family="generation",
            baselines=_GENERATORS,
        ),
        Metric(
            "preset.<term>.<parameter>",
            "for the two terms of `evaluation.morph`: each parameter of the decoded centroid, "
            "in plug-in units",
            "none",
            "",
            "the pair",
            e,
        ),
        # --------------------------------------------------------- distributions
        Metric(
            "energy_distance_db",
            "energy distance 2·E d(X, Y) − E d(X, X') − E d(Y, Y') between a generator's "
            "draws for a word (X, as many as the first half) and the word's held-out "
            "settings (Y, the second half), distances RMS dB between responses, "
            "U-statistics within each set; the mean over terms",
            "lower",
            "dB",
            _DISTRIBUTION_TERMS,
            p,
            family="distribution",
            baselines=_DISTRIBUTION_REFERENCES,
        ),
        Metric(
            "mmd",
            "unbiased squared maximum mean discrepancy between the same two sets, Gaussian "
            "kernel exp(−d²/(2h²)) on RMS dB distances d, bandwidth h the median distance "
            "among the target's settings (the same h for every generator); mean over terms",
            "lower",
            "",
            _DISTRIBUTION_TERMS,
            p,
            family="distribution",
            baselines=_DISTRIBUTION_REFERENCES,
        ),
        Metric(
            "knn_precision",
            "share of draws inside the k-nearest-neighbour ball (k = "
            "`evaluation.distribution.k`) of some target setting (Kynkäänniemi et al. 2019)",
            "higher",
            "share",
            _DISTRIBUTION_TERMS,
            p,
            family="distribution",
            baselines=_DISTRIBUTION_REFERENCES,
        ),
        Metric(
            "knn_recall",
            "share of target settings inside the k-NN ball of some draw (Kynkäänniemi et "
            "al. 2019); a point mass has none",
            "higher",
            "share",
            _DISTRIBUTION_TERMS,
            p,
            family="distribution",
            baselines=_DISTRIBUTION_REFERENCES,
        ),
        Metric(
            "knn_coverage",
            "share of target settings whose own k-NN ball holds at least one draw (Naeem "
            "et al. 2020)",
            "higher",
            "share",
            _DISTRIBUTION_TERMS,
            p,
            family="distribution",
            baselines=_DISTRIBUTION_REFERENCES,
        ),
        # --------------------------------------------------------------------- morph
        Metric(
            "morph_step_ratio",
            "along the pair's morph at α = 0, 0.05, …, 1: the largest RMS dB change between "
            "neighbours over the even step (the end points' distance / 20); 1 is even",
            "lower",
            "",
            "the pair",
            p,
            family="morph",
            baselines="`mean_preset` (the straight line between the mean presets)",
        ),
        Metric(
            "morph_monotonic_share",
            "the share of the four bands whose level never reverses along the morph",
            "higher",
            "share",
            "the pair",
            p,
            family="morph",
            baselines="`mean_preset`",
        ),
        Metric(
            "morph_energy_distance_db",
            f"`energy_distance_db` of the {_MORPH_TARGET}",
            "lower",
            "dB",
            "the pair, when both are eligible for the distributions",
            p,
            family="morph",
            baselines=_MORPH_REFERENCES,
        ),
        Metric(
            "morph_mmd",
            f"`mmd` of the {_MORPH_TARGET}",
            "lower",
            "",
            "as `morph_energy_distance_db`",
            p,
            family="morph",
            baselines=_MORPH_REFERENCES,
        ),
        Metric(
            "morph_knn_coverage",
            f"`knn_coverage` of the {_MORPH_TARGET}",
            "higher",
            "share",
            "as `morph_energy_distance_db`",
            p,
            family="morph",
            baselines=_MORPH_REFERENCES,
        ),
        # -------------------------------------------------------------- separation
        Metric(
            "silhouette",
            "silhouette of the pair's test rows in the representation",
            "higher",
            "",
            _TEST_PAIR,
            p,
            family="separation",
            baselines="`parameters` (the 13 log + min-max parameters), `pca_2`, "
            "`pca_13_whitened`, `lda` (fitted on the training pair rows)",
        ),
        Metric(
            "davies_bouldin",
            "Davies–Bouldin index of the pair's test rows in the representation",
            "lower",
            "",
            _TEST_PAIR,
            p,
            family="separation",
            baselines="the same four",
        ),
        Metric(
            "probe_accuracy",
            "a probe (standardise, logistic regression) fitted on the training part's pair "
            "rows, applied to the test part's: accuracy",
            "higher",
            "share",
            _TEST_PAIR,
            p,
            family="discrimination",
            baselines="the same four",
        ),
        Metric(
            "probe_auc",
            "the same probe's ROC AUC for the pair's first term",
            "higher",
            "share",
            _TEST_PAIR,
            p,
            family="discrimination",
            baselines="the same four",
        ),
        Metric(
            "probe_macro_f1",
            "the probe fitted on every training term, F1 averaged over the terms present in "
            "the test part",
            "higher",
            "share",
            "every test row",
            p,
            family="discrimination",
            baselines="the same four",
        ),
        # ------------------------------------------------------------ training health
        Metric(
            "contrastive_first",
            "mean training contrastive loss of the first `evaluation.health_window` epochs",
            "none",
            "",
            "the training history",
            e,
        ),
        Metric(
            "contrastive_last",
            "mean training contrastive loss of the last `evaluation.health_window` epochs",
            "none",
            "",
            "the training history",
            e,
        ),
        Metric(
            "contrastive_fell",
            "1 if `contrastive_last` < `contrastive_first`, else 0; undefined with fewer "
            "than two windows of epochs or without the contrastive term",
            "higher",
            "share",
            "the training history",
            e,
        ),
        Metric(
            "final_train_loss",
            "the training total loss of the last epoch",
            "lower",
            "",
            "the training history",
            e,
        ),
        Metric(
            "final_val_loss",
            "the validation total loss of the last epoch",
            "lower",
            "",
            "the training history",
            e,
        ),
    ]


#: Every metric, by name (placeholders kept).
REGISTRY: dict[str, Metric] = {}
for _entry in _entries():
    if _entry.name in REGISTRY:
        raise ValueError(f"metric {_entry.name!r} is declared twice in the registry")
    REGISTRY[_entry.name] = _entry

#: The order of the families in reports (unjudged reference figures last).
FAMILIES = ("separation", "discrimination", "generation", "distribution", "morph", "reconstruction")
#: The protocol's metrics (computed on every fold for models and baselines), by family.
PROTOCOL_METRICS: dict[str, Metric] = dict(
    sorted(
        ((name, spec) for name, spec in REGISTRY.items() if PROTOCOL in spec.scopes),
        key=lambda item: FAMILIES.index(item[1].family) if item[1].family else len(FAMILIES),
    )
)
#: The metrics verdicts are drawn on.
JUDGED_METRICS: dict[str, Metric] = {
    name: spec for name, spec in PROTOCOL_METRICS.items() if spec.judged
}


@cache
def _patterns() -> list[tuple[re.Pattern[str], Metric]]:
    out = []
    for name, spec in REGISTRY.items():
        if "<" in name:
            regex = re.sub(
                r"<[^>]+>", ".+", re.escape(name).replace(r"\<", "<").replace(r"\>", ">")
            )
            out.append((re.compile(f"^{regex}$"), spec))
    return out


def spec_of(name: str) -> Metric:
    """The registry entry of a concrete metric name (``valid_share.random_latents``, …).

    Raises:
        KeyError: No entry matches: the name was never declared.
    """
    if name in REGISTRY:
        return REGISTRY[name]
    for pattern, spec in _patterns():
        if pattern.match(name):
            return spec
    raise KeyError(f"metric {name!r} is not in the registry (neural_eq_morphing.models.metrics)")


class MetricCollisionError(ValueError):
    """Two metric dictionaries being merged both hold a name."""


def merge_metrics(*parts: Mapping[str, Any]) -> dict[str, Any]:
    """One dictionary from several that must not share a key.

    Raises:
        MetricCollisionError: A name is in two of them; the message names it.
    """
    merged: dict[str, Any] = {}
    for part in parts:
        shared = sorted(set(merged) & set(part))
        if shared:
            raise MetricCollisionError(
                f"metric name(s) {shared} given twice while merging a row; each metric must "
                "be computed once (neural_eq_morphing.models.metrics)"
            )
        merged.update(part)
    return merged


def without_shared(
    secondary: Mapping[str, float], primary: Mapping[str, float], rtol: float = 1e-6
) -> dict[str, float]:
    """``secondary`` less the names ``primary`` also has, after checking they agree.

    A metric both measurements compute (one definition, one eligibility rule) must give the
    same number on the same rows; a difference means the two drifted apart.

    Raises:
        MetricCollisionError: A shared name whose two values differ.
    """
    out = {}
    for name, value in secondary.items():
        if name not in primary:
            out[name] = value
            continue
        other = primary[name]
        both_nan = not np.isfinite(value) and not np.isfinite(other)
        if not both_nan and not np.isclose(value, other, rtol=rtol, atol=1e-9):
            raise MetricCollisionError(
                f"metric {name!r} was computed twice with different values ({value!r} and "
                f"{other!r}); its two computations no longer follow one definition"
            )
    return out


def markdown_tables(scope: str) -> str:
    """The metric table of one scope as Markdown (what docs/metrics.md holds)."""
    specs = [s for s in REGISTRY.values() if scope in s.scopes]
    if scope == EVALUATION:
        header = "| metric | better | unit | definition | measured on |\n|---|---|---|---|---|"
        rows = [
            f"| `{s.name}` | {s.better} | {s.unit or '-'} | {s.definition} | {s.eligible} |"
            for s in specs
        ]
    else:
        header = (
            "| metric | better | unit | family | definition | measured on | baselines |\n"
            "|---|---|---|---|---|---|---|"
        )
        rows = [
            f"| `{s.name}` | {s.better} | {s.unit or '-'} | {s.family or 'not judged'} | "
            f"{s.definition} | {s.eligible} | {s.baselines or '-'} |"
            for s in specs
        ]
    return "\n".join([header, *rows])


def update_doc(text: str) -> str:
    """``text`` with each ``<!-- registry:<scope>:start/end -->`` block rendered anew."""
    for scope in (EVALUATION, PROTOCOL):
        start, end = f"<!-- registry:{scope}:start -->", f"<!-- registry:{scope}:end -->"
        if start not in text or end not in text:
            raise ValueError(f"the document lacks the markers {start} … {end}")
        before, rest = text.split(start, 1)
        _, after = rest.split(end, 1)
        text = f"{before}{start}\n{markdown_tables(scope)}\n{end}{after}"
    return text


if __name__ == "__main__":  # python -m neural_eq_morphing.models.metrics docs/metrics.md
    import sys
    from pathlib import Path

    target = Path(sys.argv[1])
    target.write_text(update_doc(target.read_text(encoding="utf-8")), encoding="utf-8")
