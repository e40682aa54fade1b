"""Torch models of the semantic EQ (docs/design.md section 5); nothing here knows Kedro or MLflow.

* :mod:`~neural_eq_morphing.models.modules`: the plain ``nn.Module`` classes used for
  inference, export and logging (:class:`SemanticEQModel`, :func:`build_model`) and the
  decoder heads (:data:`DECODER_HEADS`);
* :mod:`~neural_eq_morphing.models.losses`: reconstruction and supervised contrastive
  losses (differentiable reference definitions);
* :mod:`~neural_eq_morphing.models.batched`: the batched ensemble implementation with
  hand-written gradients used for training;
* :mod:`~neural_eq_morphing.models.training`: :class:`TrainingConfig` and :func:`train`
  (the epochs, with ``torch.optim.Adam`` and ``ReduceLROnPlateau`` per member);
* :mod:`~neural_eq_morphing.models.progress`: progress callbacks.
"""

from neural_eq_morphing.models.batched import BatchedSemanticEQ, ParameterLayout
from neural_eq_morphing.models.losses import reconstruction_loss, supervised_contrastive_loss
from neural_eq_morphing.models.modules import (
    DECODER_HEADS,
    Decoder,
    DecoderHead,
    Encoder,
    ResidualBlock,
    SemanticEQModel,
    build_model,
    check_decoder_head,
)
from neural_eq_morphing.models.progress import (
    ConsoleProgress,
    EpochReport,
    ProgressCallback,
    default_progress,
)
from neural_eq_morphing.models.training import (
    HISTORY_COLUMNS,
    MEMBER_HISTORY_COLUMNS,
    MemberData,
    TrainingConfig,
    TrainingResult,
    TrainingTiming,
    train,
    train_members,
)

__all__ = [
    "DECODER_HEADS",
    "HISTORY_COLUMNS",
    "MEMBER_HISTORY_COLUMNS",
    "BatchedSemanticEQ",
    "ConsoleProgress",
    "Decoder",
    "DecoderHead",
    "Encoder",
    "EpochReport",
    "MemberData",
    "ParameterLayout",
    "ProgressCallback",
    "ResidualBlock",
    "SemanticEQModel",
    "TrainingConfig",
    "TrainingResult",
    "TrainingTiming",
    "build_model",
    "check_decoder_head",
    "default_progress",
    "reconstruction_loss",
    "supervised_contrastive_loss",
    "train",
    "train_members",
]
