"""The schema of ``conf/base/parameters_*.yml``, checked before any node runs.

:func:`check_parameters` validates the merged parameters (the files, ``conf/local`` and
``--params``) against pydantic models of every block: an unknown key is an error that
names the closest valid one, a value of the wrong type or out of range names the
parameter and what was expected. :class:`~neural_eq_morphing.hooks.ParameterCheckHook`
calls it when the Kedro context is created, so a typo costs a one-line message, not a
run that ignores it or fails after data processing.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args, get_origin

import click
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    model_validator,
)
from pydantic.fields import FieldInfo

from neural_eq_morphing.errors import UserError
from neural_eq_morphing.models.config import TrainingConfig
from neural_eq_morphing.models.data import check_output_space
from neural_eq_morphing.models.metrics import JUDGED_METRICS
from neural_eq_morphing.models.protocol import BASELINE_LABELS
from neural_eq_morphing.pipelines.designs import resolve_configurations

_STRICT = ConfigDict(extra="forbid")


class ParameterError(click.ClickException, UserError, ValueError):
    """A parameter is unknown, of the wrong type or out of range (a user error).

    A ``click.ClickException``: ``kedro run`` prints its message as one line
    (``Error: ...``) and exits with status 1, without a traceback; elsewhere it is a
    ``ValueError``.
    """


class _Block(BaseModel):
    """A parameter block: unknown keys are errors."""

    model_config = _STRICT


class SafeDb(_Block):
    """``safe_db``: the published file (from globals.yml)."""

    url: str
    sha256: str
    size_bytes: int = Field(gt=0)
    n_lines: int | None = Field(default=None, gt=0)


class RawFile(_Block):
    """``raw_file``: whether a file that is not the published one is used."""

    own_data: bool


class Terms(_Block):
    """``terms`` (and ``compare.reproduction.terms``): which descriptors are kept."""

    min_examples: int = Field(ge=1)
    merge: dict[str, str]
    exclude: list[str]


class Validation(_Block):
    """``validation``: the rejected share allowed, the limit tolerance."""

    max_rejected_fraction: float = Field(ge=0, le=1)
    limit_rel_tol: float = Field(ge=0)


class Fractions(_Block):
    """``split.fractions``."""

    train: float = Field(gt=0, lt=1)
    validation: float = Field(gt=0, lt=1)
    test: float = Field(gt=0, lt=1)


class Split(_Block):
    """``split``: the contributor-grouped split of ``kedro run``."""

    fractions: Fractions
    seed: int


class Response(_Block):
    """``evaluation.response``: the frequency grid."""

    n_points: int = Field(ge=2)
    f_min: float = Field(gt=0)
    f_max: float = Field(gt=0)


class Distribution(_Block):
    """``evaluation.distribution``."""

    min_test_rows: int = Field(ge=4)
    k: int = Field(ge=1)

    @model_validator(mode="after")
    def _halves_hold_k_neighbours(self) -> Distribution:
        if self.min_test_rows // 2 <= self.k:
            raise ValueError(
                f"k = {self.k} needs halves of more than k rows: min_test_rows must be at "
                f"least {2 * (self.k + 1)}, got {self.min_test_rows}"
            )
        return self


class Evaluation(_Block):
    """``evaluation``."""

    seed: int
    n_random_latents: int = Field(ge=1)
    interpolation_step: float = Field(gt=0, le=1)
    min_test_rows: int = Field(ge=1)
    morph: list[str] = Field(min_length=2, max_length=2)
    morph_alphas: list[float]
    health_window: int = Field(ge=1)
    n_worst: int = Field(ge=0)
    split_half_repeats: int = Field(ge=1)
    distribution: Distribution
    response: Response


class FeatureNormaliser(_Block):
    """A design's ``feature_normaliser``."""

    kind: Literal["minmax", "zscore"]
    log_kinds: list[Literal["gain", "freq", "q"]] | None = None


def _training_model(name: str, *, all_optional: bool) -> type[BaseModel]:
    """A design's ``training`` block, derived from :class:`TrainingConfig`'s fields.

    The types, ranges and defaults are TrainingConfig's own (one definition); ``seeds``
    gives way to the design's one ``seed``. The rules that tie fields together are
    checked afterwards by building the TrainingConfig (:func:`_check_combinations`), so
    that their message names the design. ``all_optional``: every field may be left out
    (an ablation's changes).
    """
    spec: dict[str, Any] = {}
    for key, field in TrainingConfig.model_fields.items():
        if key == "seeds":
            continue
        info = FieldInfo.merge_field_infos(field, default=None) if all_optional else field
        spec[key] = (field.annotation | None if all_optional else field.annotation, info)
    spec["seed"] = (int | None, None) if all_optional else (int, ...)
    return create_model(name, __config__=_STRICT, **spec)


#: A design's training block: TrainingConfig's fields and the design's seed.
Training = _training_model("Training", all_optional=False)
#: An ablation's training changes: any of them.
TrainingChanges = _training_model("TrainingChanges", all_optional=True)


class Design(_Block):
    """One design of ``designs``."""

    label: str
    feature_normaliser: FeatureNormaliser
    strict_ranges: bool
    training: Training  # type: ignore[valid-type]


class Configuration(_Block):
    """One ablation of ``compare.configurations``."""

    design: str
    label: str | None = None
    feature_normaliser: dict[str, Any] | None = None
    training: TrainingChanges | None = None  # type: ignore[valid-type]


class Folds(_Block):
    """``compare.folds``."""

    min_rows: int = Field(ge=1)
    k: int = Field(ge=0)
    validation_fraction: float = Field(gt=0, lt=1)
    seed: int


class Statistics(_Block):
    """``compare.statistics``."""

    confidence: float = Field(gt=0, lt=1)
    alpha: float = Field(gt=0, lt=1)
    power: float = Field(gt=0, lt=1)
    seed: int


class Reproduction(_Block):
    """``compare.reproduction``."""

    terms: Terms


class Question(_Block):
    """One of ``compare.questions``: a protocol metric and the baseline to beat on it."""

    metric: str
    baseline: str


class Compare(_Block):
    """``compare``."""

    n_seeds: int = Field(ge=1)
    first_seed: int
    epochs: int | None = Field(default=None, ge=1)
    designs: list[str] | str | None = None  # a string: names separated by spaces
    reference_design: str | None = None
    questions: list[Question]
    folds: Folds
    statistics: Statistics
    reproduction: Reproduction
    configurations: dict[str, Configuration]
    claimed: dict[str, dict[str, float]]


class PublishResults(_Block):
    """``publish_results``."""

    image_prefix: str


class Parameters(_Block):
    """Every parameter block of ``conf/base/parameters_*.yml``."""

    safe_db: SafeDb
    raw_file: RawFile
    terms: Terms
    validation: Validation
    split: Split
    evaluation: Evaluation
    designs: dict[str, Design]
    compare: Compare
    publish_results: PublishResults


def _model_at(location: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model that holds the field at ``location`` (for close-match hints)."""
    model: Any = Parameters
    parts = list(location[:-1])
    while parts:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        field = model.model_fields.get(str(parts.pop(0)))
        if field is None:
            return None
        annotation = field.annotation
        if get_origin(annotation) is dict:  # the next part is a key of the dict
            annotation = get_args(annotation)[1]
            if parts:
                parts.pop(0)
        models = [a for a in (get_args(annotation) or (annotation,)) if isinstance(a, type)]
        model = next((a for a in models if issubclass(a, BaseModel)), annotation)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _describe(error: Mapping[str, Any], designs: Sequence[str] = ()) -> str:
    location = tuple(error["loc"])
    name = ".".join(str(part) for part in location)
    if error["type"] == "extra_forbidden" and len(location) == 1 and location[0] in designs:
        return (
            f"unknown parameter {name!r}; did you mean 'designs.{name}'? (a design's "
            "parameters are under designs.<design>, e.g. designs.log2.training.epochs)"
        )
    if error["type"] == "extra_forbidden":
        model = _model_at(location)
        known = list(model.model_fields) if model is not None else []
        close = difflib.get_close_matches(str(location[-1]), known, n=1)
        hint = (
            f"; did you mean {'.'.join([*map(str, location[:-1]), close[0]])!r}?" if close else ""
        )
        valid = f" (known here: {', '.join(known)})" if known and not close else ""
        return f"unknown parameter {name!r}{hint}{valid}"
    if error["type"] == "missing":
        return f"parameter {name!r} is missing"
    return f"parameter {name!r}: {error['msg'].lower()}, got {error.get('input')!r}"


def check_parameters(parameters: Mapping[str, Any]) -> None:
    """Validate the merged parameters against :class:`Parameters`.

    Raises:
        ParameterError: One line per problem (the first five), each naming the
            parameter and what was expected.
    """
    try:
        Parameters.model_validate(dict(parameters))
    except ValidationError as error:
        designs = parameters.get("designs")
        known = list(designs) if isinstance(designs, Mapping) else []
        problems = [_describe(item, known) for item in error.errors()]
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ParameterError("; ".join(problems[:5]) + more) from None
    _check_combinations(parameters)


def _check_combinations(parameters: Mapping[str, Any]) -> None:
    """Check what each design and compare configuration combines across its fields.

    The types are fine by now; this builds each one's ``TrainingConfig`` (whose checks
    tie fields together, e.g. the KL weights to ``variational``) and checks that its
    feature normaliser is the space its decoder head and loss assume.

    Raises:
        ParameterError: Naming the design or configuration and the problem.
    """
    try:
        resolved = resolve_configurations(parameters["designs"], parameters["compare"])
    except ValueError as error:
        raise ParameterError(str(error)) from None
    compare = parameters["compare"]
    reference = compare.get("reference_design")
    if reference is not None and reference not in parameters["designs"]:
        raise ParameterError(
            f"compare.reference_design {reference!r} is not a design; expected one of "
            f"{list(parameters['designs'])}"
        )
    for question in compare.get("questions") or []:
        if question["metric"] not in JUDGED_METRICS:
            raise ParameterError(
                f"compare.questions: unknown metric {question['metric']!r}; expected one of "
                f"{list(JUDGED_METRICS)}"
            )
        if question["baseline"] not in BASELINE_LABELS:
            raise ParameterError(
                f"compare.questions: unknown baseline {question['baseline']!r}; expected one "
                f"of {list(BASELINE_LABELS)}"
            )
    for name, resolved_config in resolved.items():
        where = (
            f"designs.{name}" if name in parameters["designs"] else f"compare.configurations.{name}"
        )
        try:
            config = TrainingConfig.from_dict(resolved_config["training"])
            check_output_space(resolved_config["feature_normaliser"], config)
        except ValueError as error:
            raise ParameterError(f"{where}: {error}") from None
