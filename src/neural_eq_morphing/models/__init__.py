"""Torch models of the semantic EQ (DESIGN.md section 5); nothing here knows Kedro or MLflow.

* :mod:`~neural_eq_morphing.models.modules`: the plain ``nn.Module`` classes used for
  inference, export and logging (:class:`SemanticEQModel`, :func:`build_model`);
* :mod:`~neural_eq_morphing.models.losses`: reconstruction and supervised contrastive
  losses (differentiable reference definitions);
* :mod:`~neural_eq_morphing.models.batched`: the batched ensemble implementation with
  hand-written gradients used for training;
* :mod:`~neural_eq_morphing.models.optim`: Adam and ReduceLROnPlateau per member;
* :mod:`~neural_eq_morphing.models.training`: :class:`TrainingConfig` and :func:`train`;
* :mod:`~neural_eq_morphing.models.progress`: progress callbacks.
"""

from neural_eq_morphing.models.batched import BatchedSemanticEQ, ParameterLayout
from neural_eq_morphing.models.losses import reconstruction_loss, supervised_contrastive_loss
from neural_eq_morphing.models.modules import (
    VARIANTS,
    Decoder,
    Encoder,
    ResidualBlock,
    SemanticEQModel,
    Variant,
    build_model,
)
from neural_eq_morphing.models.optim import BatchedAdam, PlateauScheduler
from neural_eq_morphing.models.progress import (
    ConsoleProgress,
    EpochReport,
    ProgressCallback,
    default_progress,
)
from neural_eq_morphing.models.training import (
    HISTORY_COLUMNS,
    TrainingConfig,
    TrainingResult,
    TrainingTiming,
    train,
)

__all__ = [
    "HISTORY_COLUMNS",
    "VARIANTS",
    "BatchedAdam",
    "BatchedSemanticEQ",
    "ConsoleProgress",
    "Decoder",
    "Encoder",
    "EpochReport",
    "ParameterLayout",
    "PlateauScheduler",
    "ProgressCallback",
    "ResidualBlock",
    "SemanticEQModel",
    "TrainingConfig",
    "TrainingResult",
    "TrainingTiming",
    "Variant",
    "build_model",
    "default_progress",
    "reconstruction_loss",
    "supervised_contrastive_loss",
    "train",
]
