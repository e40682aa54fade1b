"""The registered pipelines read as the story in kedro-viz: namespaces and layers."""

from __future__ import annotations

from pathlib import Path

import pytest
from kedro.framework.project import pipelines
from kedro.framework.session import KedroSession

from tests.conftest import KEDRO_VIZ_LAYERS


@pytest.fixture
def catalog(kedro_project: Path):
    with KedroSession.create(project_path=kedro_project) as session:
        yield session.load_context().catalog


def test_every_dataset_of_every_pipeline_has_a_layer(catalog):
    names = set()
    for name in pipelines:
        names |= pipelines[name].datasets()
    names = {name for name in names if not name.startswith("params:") and name != "parameters"}
    layers = {}
    for name in sorted(names):
        dataset = catalog.get(name)
        assert dataset is not None, f"{name} is not declared in the catalog"
        layers[name] = ((dataset.metadata or {}).get("kedro-viz") or {}).get("layer")
    assert {name for name, layer in layers.items() if layer not in KEDRO_VIZ_LAYERS} == set()


def test_default_pipeline_namespaces_follow_ingest_to_report(kedro_project):
    nodes = pipelines["__default__"].nodes
    namespaces = [node.namespace for node in nodes]
    # Topological order: shared processing, then Log 2's normalise → train → evaluate.
    first = {ns: namespaces.index(ns) for ns in dict.fromkeys(namespaces)}
    assert list(first) == ["data_processing", "log2.normalise", "log2.train", "log2.evaluate"]
    assert {node.name for node in nodes} >= {
        "data_processing.ingest_safe_db",
        "data_processing.validate_settings",
        "data_processing.split_by_contributor",
        "log2.normalise.fit_normaliser",
        "log2.train.train_model",
        "log2.evaluate.evaluate_ranges",
    }
    # Stage namespaces group nodes only: datasets keep the variant prefix alone.
    assert "log2.model" in pipelines["__default__"].datasets()


def test_compare_pipeline_is_processing_then_the_compare_namespace(kedro_project):
    namespaces = {node.namespace for node in pipelines["compare"].nodes}
    assert namespaces == {"data_processing", "compare"}
