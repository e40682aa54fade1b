"""Helpers of the model tests: designs' configurations from the YAML, the plain reference."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from tests.conftest import project_parameters


def designs() -> dict[str, Any]:
    """The ``designs`` block of ``conf/base/parameters_designs.yml`` (``extends`` resolved)."""
    return project_parameters("designs")["designs"]


def design_training(name: str, **overrides: Any) -> dict[str, Any]:
    """A design's ``training`` block less ``seed`` (what the Kedro node passes), updated.

    Args:
        name: The design, e.g. ``"log2"``.
        **overrides: Values that replace (or add to) the block's.

    Returns:
        A plain dict for :meth:`~neural_eq_morphing.models.TrainingConfig.from_dict`.
    """
    values = dict(designs()[name]["training"])
    values.pop("seed", None)
    values.update(overrides)
    return values


def design_with_head(decoder_head: str) -> str:
    """The first design (in file order) whose decoder head is ``decoder_head``."""
    for name, design in designs().items():
        if design["training"]["decoder_head"] == decoder_head:
            return name
    raise LookupError(f"no design in parameters_designs.yml uses decoder_head {decoder_head!r}")


#: The benchmarks' folder: its ``eager_reference`` is the plain ``nn.Module`` definition
#: of the network that the tests use as an independent oracle.
BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def eager_reference() -> ModuleType:
    """``benchmarks/eager_reference.py`` (``PlainSemanticEQ``), imported from its folder."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module("eager_reference")


def plain_model(decoder_head: str, seed: int, **dims: Any) -> tuple[nn.Module, torch.Generator]:
    """A ``PlainSemanticEQ`` with torch's default init under ``torch.manual_seed(seed)``.

    Returns the module and a generator that continues the seed's stream right after the
    initial draws (torch's global RNG is left as it was).

    Args:
        decoder_head: The head.
        seed: The seed of the initial draws.
        **dims: ``hidden_dims``, ``latent_dim``, ``projection_dim``, ``dropout``.
    """
    values = {"hidden_dims": (16, 24, 16), "latent_dim": 8, "projection_dim": 12, "dropout": 0.1}
    values.update(dims)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = eager_reference().PlainSemanticEQ(decoder_head, **values)
        generator = torch.Generator()
        generator.set_state(torch.random.get_rng_state())
    return module, generator


def with_masks(module: nn.Module, masks: torch.Tensor) -> None:
    """Make a plain module's dropout layers multiply by fixed (scaled) masks in training.

    ``masks`` ``(..., sum of the block widths)``: the encoder's blocks, then the decoder's,
    the layout of the engine's masks.
    """
    start = 0
    for block in [*module.encoder.blocks, *module.decoder.blocks]:
        width = block.linear1.out_features
        mask, layer = masks[..., start : start + width], block.dropout
        layer.forward = lambda t, m=mask, d=layer: t * m if d.training else t
        start += width
    assert start == masks.shape[-1]
