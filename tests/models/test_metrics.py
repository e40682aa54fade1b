"""The metric registry: one declaration per metric, merges that refuse a name twice, docs."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from neural_eq_morphing.models.metrics import (
    EVALUATION,
    PROTOCOL,
    REGISTRY,
    MetricCollisionError,
    markdown_tables,
    merge_metrics,
    spec_of,
    without_shared,
)
from neural_eq_morphing.pipelines.compare.nodes import fold_row

ROOT = Path(__file__).resolve().parents[2]


def test_a_fold_row_with_a_colliding_metric_name_is_refused():
    keys = {"configuration": "log2", "fold": "group-2", "seed": 42}
    protocol = {"generation_rms_db": 1.9, "silhouette": 0.4}
    # the evaluation's own value of a shared metric must agree with the protocol's …
    with pytest.raises(MetricCollisionError, match="generation_rms_db"):
        fold_row(keys, protocol, {"generation_rms_db": 2.2, "valid_share.random_latents": 1.0})
    # … and a plain merge of two dictionaries that share a name is an error, not an overwrite
    with pytest.raises(MetricCollisionError, match="silhouette"):
        merge_metrics(keys, protocol, {"silhouette": 0.1})
    with pytest.raises(MetricCollisionError, match="fold"):
        merge_metrics(keys, {"fold": "group-1"})
    row = fold_row(keys, protocol, {"generation_rms_db": 1.9, "valid_share.random_latents": 1.0})
    assert row == {**keys, **protocol, "valid_share.random_latents": 1.0}


def test_without_shared_keeps_unshared_names_and_nan_pairs():
    assert without_shared({"a": 1.0, "b": float("nan")}, {"b": float("nan")}) == {"a": 1.0}


def test_every_concrete_name_finds_one_entry_and_unknown_names_fail():
    assert spec_of("valid_share.random_latents").name == "valid_share.<set>"
    assert spec_of("silhouette.held_out.latent").name == "silhouette.<protocol>.<space>"
    assert spec_of("silhouette").name == "silhouette"
    assert spec_of("preset.warm.peak1_q").name == "preset.<term>.<parameter>"
    with pytest.raises(KeyError, match="realism_ratio"):
        spec_of("realism_ratio")


def test_each_metric_is_declared_once_in_the_source():
    """``git grep`` the registry: no metric name is declared in two places."""
    declared = subprocess.run(
        ["git", "grep", "-h", "-E", r"^\s+Metric\($", "--", "src"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert len(declared) == len(REGISTRY)  # every Metric( entry is in the one registry file
    source = (ROOT / "src/neural_eq_morphing/models/metrics.py").read_text(encoding="utf-8")
    names = re.findall(r'Metric\(\s*"([^"]+)"', source)
    assert sorted(names) == sorted(REGISTRY)
    assert len(names) == len(set(names))


def test_directions_units_and_bounds_are_consistent():
    for spec in REGISTRY.values():
        assert spec.better in {"higher", "lower", "one", "none"}, spec.name
        assert set(spec.scopes) <= {EVALUATION, PROTOCOL}, spec.name
        if spec.unit == "share":
            assert spec.bounds == (0.0, 1.0), spec.name
        if spec.judged:
            assert spec.better != "none", spec.name


def test_docs_metrics_tables_are_the_registry():
    doc = (ROOT / "docs/metrics.md").read_text(encoding="utf-8")
    for scope in (EVALUATION, PROTOCOL):
        start, end = f"<!-- registry:{scope}:start -->", f"<!-- registry:{scope}:end -->"
        assert start in doc, f"docs/metrics.md lacks the {scope} block"
        assert end in doc, f"docs/metrics.md lacks the end of the {scope} block"
        block = doc.split(start, 1)[1].split(end, 1)[0].strip()
        assert block == markdown_tables(scope), (
            f"docs/metrics.md's {scope} table differs from the registry; regenerate it with "
            "`python -m neural_eq_morphing.models.metrics docs/metrics.md`"
        )


def test_no_realism_ratio_left_in_code_docs_or_conf():
    found = subprocess.run(
        ["git", "grep", "-l", "realism_ratio", "--", "src", "docs", "conf", "README.md"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    assert found == []


def test_merge_keeps_values():
    merged = merge_metrics({"a": 1.0}, {"b": np.float64(2.0)})
    assert merged == {"a": 1.0, "b": 2.0}
