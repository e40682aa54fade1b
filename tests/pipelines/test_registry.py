"""The registered pipelines read as the story in kedro-viz: namespaces and layers."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from kedro.framework.project import pipelines
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from tests.conftest import DESIGNS, KEDRO_VIZ_LAYERS, make_kedro_project


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
        "log2.evaluate.evaluate",
    }
    # Stage namespaces group nodes only: datasets keep the design prefix alone.
    assert "log2.model" in pipelines["__default__"].datasets()


def test_compare_pipeline_is_processing_then_the_compare_namespace(kedro_project):
    namespaces = {node.namespace for node in pipelines["compare"].nodes}
    assert namespaces == {"data_processing", "compare"}


def test_every_design_has_its_chain_and_a_place_in_the_stages(kedro_project):
    for design in DESIGNS:
        chain = pipelines[design]
        namespaces = {node.namespace for node in chain.nodes}
        assert namespaces == {
            "data_processing",
            f"{design}.normalise",
            f"{design}.train",
            f"{design}.evaluate",
        }
        for stage, name in (("data_processing", "normalise"), ("training", "train")):
            assert any(n.namespace == f"{design}.{name}" for n in pipelines[stage].nodes)
        assert any(n.namespace == f"{design}.evaluate" for n in pipelines["evaluation"].nodes)


def test_a_design_added_to_the_parameters_is_a_pipeline_of_its_own(tmp_path, monkeypatch):
    """One YAML block: a Log 2 with a 16-d latent gets its chain and its datasets."""
    project = make_kedro_project(tmp_path, monkeypatch)
    path = project / "conf" / "base" / "parameters_designs.yml"
    parameters = yaml.safe_load(path.read_text())
    log2 = parameters["designs"]["log2"]
    parameters["designs"]["log2_latent16"] = {
        **log2,
        "label": "Log 2 with a 16-d latent",
        "training": {**log2["training"], "latent_dim": 16},
    }
    path.write_text(yaml.safe_dump(parameters, sort_keys=False))
    bootstrap_project(project)  # the registry reads the designs again
    assert "log2_latent16" in pipelines
    assert "log2_latent16.model" in pipelines["log2_latent16"].datasets()
    assert "log2_latent16.model" in pipelines["training"].datasets()
    with KedroSession.create(project_path=project) as session:
        catalog = session.load_context().catalog
        params = catalog.load("params:designs.log2_latent16.training")
    assert params["latent_dim"] == 16
