"""The registered pipelines read as the story in kedro-viz: namespaces and layers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from kedro.framework.project import pipelines, settings
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from neural_eq_morphing.config_loader import ProjectConfigLoader
from neural_eq_morphing.parameter_schema import ParameterError
from neural_eq_morphing.pipelines.designs import DESIGN_KEYS, resolve_extends
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
    parameters["designs"]["log2_latent16"] = {
        "extends": "log2",  # only what changes
        "label": "Log 2 with a 16-d latent",
        "training": {"latent_dim": 16},
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


def test_a_design_that_extends_another_is_that_design_with_its_changes():
    designs = {
        "base": {
            "label": "B",
            "strict_ranges": True,
            "feature_normaliser": {"kind": "minmax"},
            "training": {"epochs": 150, "hidden_dims": [64, 128, 64], "latent_dim": 32},
        },
        "child": {"extends": "base", "label": "C", "training": {"hidden_dims": [8], "epochs": 3}},
        "grandchild": {
            "extends": "child",
            "label": "G",
            "feature_normaliser": {"log_kinds": ["q"]},
        },
    }
    resolved = resolve_extends(designs)
    assert resolved["base"] is designs["base"]
    assert resolved["child"] == {
        "label": "C",
        "strict_ranges": True,
        "feature_normaliser": {"kind": "minmax"},
        # mappings merge key by key; a list replaces the parent's
        "training": {"epochs": 3, "hidden_dims": [8], "latent_dim": 32},
    }
    assert resolved["grandchild"]["training"] == resolved["child"]["training"]
    assert resolved["grandchild"]["feature_normaliser"] == {"kind": "minmax", "log_kinds": ["q"]}
    assert list(resolved) == list(designs)
    assert "extends" not in str(resolved)
    assert designs["child"]["training"] == {"hidden_dims": [8], "epochs": 3}  # not mutated


@pytest.mark.parametrize(
    ("designs", "message"),
    [
        ({"a": {"extends": "nope", "label": "A"}}, "designs.a.extends names unknown design 'nope'"),
        (
            {"a": {"extends": "b", "label": "A"}, "b": {"extends": "a", "label": "B"}},
            "makes a cycle: a -> b -> a",
        ),
        ({"a": {"label": "A"}, "b": {"extends": "a"}}, "designs.b extends 'a' and needs a label"),
    ],
)
def test_a_bad_extends_is_named_in_one_line(designs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        resolve_extends(designs)


def test_the_config_loader_resolves_the_projects_designs(tmp_path, monkeypatch):
    project = make_kedro_project(tmp_path, monkeypatch)
    path = project / "conf" / "base" / "parameters_designs.yml"
    raw = yaml.safe_load(path.read_text())["designs"]
    assert any("extends" in block for block in raw.values())  # the project uses it
    loader = ProjectConfigLoader(conf_source=str(project / "conf"), **settings.CONFIG_LOADER_ARGS)
    loaded = loader["parameters"]["designs"]
    assert loaded == resolve_extends(raw)
    assert all(set(block) == set(DESIGN_KEYS) for block in loaded.values())
    # a bad extends stops the run with one line, before any node
    raw["vae2"]["extends"] = "vae3"
    path.write_text(yaml.safe_dump({"designs": raw}, sort_keys=False))
    with pytest.raises(ParameterError, match=r"designs\.vae2\.extends names unknown design 'vae3'"):
        ProjectConfigLoader(conf_source=str(project / "conf"), **settings.CONFIG_LOADER_ARGS)[
            "parameters"
        ]
