"""Torch models of the semantic EQ (docs/design.md section 5); nothing here knows Kedro or MLflow.

* :mod:`~neural_eq_morphing.models.config`: :class:`TrainingConfig`, a design's
  hyper-parameters;
* :mod:`~neural_eq_morphing.models.heads`: the decoder heads (:data:`DECODER_HEADS`);
* :mod:`~neural_eq_morphing.models.network`: the network, :class:`SemanticEQModel`, one
  definition for ``M`` members at once (``M = 1`` is the model that is saved and served);
* :mod:`~neural_eq_morphing.models.losses`: the losses, with row masks, and a design's
  :class:`~neural_eq_morphing.models.losses.Objective`;
* :mod:`~neural_eq_morphing.models.optim`: Adam and the LR schedule per member;
* :mod:`~neural_eq_morphing.models.members`: each member's rows, validated and stacked;
* :mod:`~neural_eq_morphing.models.training`: :func:`train` and :func:`train_members`
  (the epochs of a batched ensemble, gradients by autograd);
* :mod:`~neural_eq_morphing.models.progress`: progress callbacks.
"""

from neural_eq_morphing.models.config import TrainingConfig
from neural_eq_morphing.models.heads import DECODER_HEADS, DecoderHead, check_decoder_head
from neural_eq_morphing.models.losses import (
    Objective,
    reconstruction_per_row,
    supervised_contrastive_loss,
)
from neural_eq_morphing.models.members import MemberData
from neural_eq_morphing.models.network import ParameterLayout, SemanticEQModel, build_model
from neural_eq_morphing.models.progress import (
    ConsoleProgress,
    EpochReport,
    ProgressCallback,
    default_progress,
)
from neural_eq_morphing.models.training import (
    HISTORY_COLUMNS,
    MEMBER_HISTORY_COLUMNS,
    TrainingResult,
    TrainingTiming,
    train,
    train_members,
)

__all__ = [
    "DECODER_HEADS",
    "HISTORY_COLUMNS",
    "MEMBER_HISTORY_COLUMNS",
    "ConsoleProgress",
    "DecoderHead",
    "EpochReport",
    "MemberData",
    "Objective",
    "ParameterLayout",
    "ProgressCallback",
    "SemanticEQModel",
    "TrainingConfig",
    "TrainingResult",
    "TrainingTiming",
    "build_model",
    "check_decoder_head",
    "default_progress",
    "reconstruction_per_row",
    "supervised_contrastive_loss",
    "train",
    "train_members",
]
