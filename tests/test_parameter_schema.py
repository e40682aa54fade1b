"""Parameters are checked against the schema before anything runs."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from kedro.framework.session import KedroSession

from neural_eq_morphing.models.config import TrainingConfig, required_fields
from neural_eq_morphing.parameter_schema import (
    ParameterError,
    Training,
    TrainingChanges,
    check_parameters,
)
from tests.conftest import project_parameters

BLOCKS = ("data_processing", "designs", "compare", "evaluation")


@pytest.fixture(scope="module")
def parameters() -> dict:
    merged: dict = {}
    for name in BLOCKS:
        merged.update(project_parameters(name))
    merged["safe_db"] = project_parameters_globals()
    return merged


def project_parameters_globals() -> dict:
    root = Path(__file__).resolve().parents[1]
    return yaml.safe_load((root / "conf" / "base" / "globals.yml").read_text())["safe_db"]


def test_the_projects_own_parameters_pass(parameters):
    check_parameters(parameters)


def test_the_schema_of_a_training_block_is_derived_from_the_training_config(parameters):
    # One definition: the block's fields are TrainingConfig's (seed for seeds), with
    # TrainingConfig's required fields required and its ranges enforced.
    fields = Training.model_fields
    assert set(fields) == (set(TrainingConfig.model_fields) - {"seeds"}) | {"seed"}
    assert {name for name, spec in fields.items() if spec.is_required()} == {
        *required_fields(),
        "seed",
    }
    assert not any(spec.is_required() for spec in TrainingChanges.model_fields.values())
    with pytest.raises(ParameterError, match="epochs': input should be greater than or equal to 1"):
        check_parameters(_set(parameters, "designs.log2.training.epochs", 0))


def _set(parameters: dict, dotted: str, value) -> dict:
    changed = copy.deepcopy(parameters)
    *path, last = dotted.split(".")
    block = changed
    for key in path:
        block = block.setdefault(key, {})
    block[last] = value
    return changed


@pytest.mark.parametrize(
    ("dotted", "value", "message"),
    [
        (
            "terms.min_exmaples",
            3,
            "unknown parameter 'terms.min_exmaples'; did you mean 'terms.min_examples'?",
        ),
        ("foo", 1, "unknown parameter 'foo' (known here: safe_db, raw_file"),
        ("log2.training.epochs", "abc", "unknown parameter 'log2'; did you mean 'designs.log2'?"),
        ("split.seed", "abc", "parameter 'split.seed': input should be a valid integer"),
        (
            "designs.log2.training.epochs",
            "abc",
            "parameter 'designs.log2.training.epochs': input should be a valid integer",
        ),
        (
            "compare.folds.k",
            -1,
            "parameter 'compare.folds.k': input should be greater than or equal to 0",
        ),
        ("evaluation.morph", ["warm"], "parameter 'evaluation.morph'"),
        (
            "compare.configurations.log2_no_lr_schedule.training.lr_shedule",
            False,
            "did you mean 'compare.configurations.log2_no_lr_schedule.training.lr_schedule'?",
        ),
        # What a design combines across fields (issue 14): checked before any node too.
        (
            "designs.log2_separate_heads.feature_normaliser",
            {"kind": "zscore"},
            "designs.log2_separate_heads: decoder_head: separate needs the feature normaliser "
            "{kind: minmax, log_kinds: [freq, q]}",
        ),
        (
            "designs.log2.training.kl_weight_end",
            0.01,
            "designs.log2: kl_weight_start and kl_weight_end apply to variational models only",
        ),
        (
            "designs.log1.training.perceptual_weight",
            1.0,
            "designs.log1: perceptual_weight needs a decoder output in normalised space",
        ),
        (
            "compare.reference_design",
            "log3",
            "compare.reference_design 'log3' is not a design; expected one of ['log1', 'log2',",
        ),
        (
            "compare.questions",
            [{"metric": "generation_rms", "baseline": "mean_preset"}],
            "compare.questions: unknown metric 'generation_rms'",
        ),
    ],
)
def test_a_bad_parameter_is_one_line_that_names_it(parameters, dotted, value, message):
    with pytest.raises(ParameterError) as caught:
        check_parameters(_set(parameters, dotted, value))
    text = str(caught.value)
    assert message in text
    assert "\n" not in text


@pytest.mark.integration
def test_a_run_with_a_bad_parameter_stops_before_any_node(kedro_project, real_safe_db):
    (kedro_project / "data" / "01_raw" / real_safe_db.name).write_bytes(real_safe_db.read_bytes())
    with (
        pytest.raises(ParameterError, match=r"did you mean 'terms\.min_examples'"),
        KedroSession.create(
            project_path=kedro_project, runtime_params={"terms": {"min_exmaples": 3}}
        ) as session,
    ):
        session.run(pipeline_names=["data_processing"])
    # Nothing but the raw file (and the hidden lock that MLflow's set-up is taken under).
    written = [p for p in (kedro_project / "data").rglob("*") if p.is_file()]
    assert [p.name for p in written if p.name != ".tracking_setup.lock"] == [real_safe_db.name]


def test_an_ablation_that_breaks_its_designs_space_is_named(parameters):
    changed = _set(
        parameters,
        "compare.configurations.heads_linear",
        {"design": "log2_separate_heads", "feature_normaliser": {"log_kinds": ["q"]}},
    )
    with pytest.raises(ParameterError, match=r"compare\.configurations\.heads_linear: decoder"):
        check_parameters(changed)
