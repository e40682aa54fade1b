"""The plain eager reference of docs/design.md section 9: ``nn.Linear``/``nn.LayerNorm`` modules.

The yardstick every speed budget is a ratio against (the ``eager`` case of
``train_speed.py``): one model as a conventional ``nn.Module`` with per-layer parameters,
trained with autograd and ``torch.optim.Adam``, at the speed of the original scripts.
It is not product code: the project's network is
:class:`neural_eq_morphing.models.network.SemanticEQModel`. Its parameter names are those
of that network's :class:`~neural_eq_morphing.models.network.ParameterLayout` pieces
(and of the first model file format), so the tests use it as an independent definition
of the same network.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from neural_eq_morphing.models.heads import decoder_output
from neural_eq_morphing.models.network import LAYER_NORM_EPS


class ResidualBlock(nn.Module):
    """``norm2(linear2(dropout(relu(norm1(linear1(x)))))) + skip(x)``."""

    def __init__(self, n_in: int, n_out: int, dropout: float) -> None:
        super().__init__()
        self.linear1 = nn.Linear(n_in, n_out)
        self.norm1 = nn.LayerNorm(n_out, eps=LAYER_NORM_EPS)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(n_out, n_out)
        self.norm2 = nn.LayerNorm(n_out, eps=LAYER_NORM_EPS)
        self.skip = nn.Linear(n_in, n_out)

    def forward(self, x: Tensor) -> Tensor:
        """Map ``(..., n_in)`` to ``(..., n_out)``."""
        hidden = self.dropout(torch.relu(self.norm1(self.linear1(x))))
        return self.norm2(self.linear2(hidden)) + self.skip(x)


def _stack(n_in: int, widths: Sequence[int], dropout: float) -> nn.ModuleList:
    dims = [n_in, *widths]
    return nn.ModuleList(ResidualBlock(dims[i], dims[i + 1], dropout) for i in range(len(widths)))


class _Encoder(nn.Module):
    def __init__(self, n_features: int, widths: Sequence[int], latent: int, dropout: float):
        super().__init__()
        self.blocks = _stack(n_features, widths, dropout)
        self.hidden = nn.Linear(widths[-1], widths[-1])
        self.to_latent = nn.Linear(widths[-1], latent)


class _Decoder(nn.Module):
    def __init__(self, n_features: int, widths: Sequence[int], latent: int, dropout: float):
        super().__init__()
        self.blocks = _stack(latent, widths, dropout)
        self.head = nn.Linear(widths[-1], n_features)


class PlainSemanticEQ(nn.Module):
    """One deterministic (tanh-latent) semantic EQ model as plain modules."""

    def __init__(
        self,
        decoder_head: str,
        hidden_dims: Sequence[int],
        latent_dim: int,
        projection_dim: int,
        dropout: float,
        n_features: int = 13,
    ) -> None:
        super().__init__()
        self.decoder_head = decoder_head
        self.encoder = _Encoder(n_features, hidden_dims, latent_dim, dropout)
        self.projection = nn.Linear(latent_dim, projection_dim)
        self.decoder = _Decoder(n_features, hidden_dims, latent_dim, dropout)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(latent, projection, reconstruction)``."""
        for block in self.encoder.blocks:
            x = block(x)
        latent = torch.tanh(self.encoder.to_latent(torch.relu(self.encoder.hidden(x))))
        h = latent
        for block in self.decoder.blocks:
            h = block(h)
        output = decoder_output(self.decoder.head(h)[None], [self.decoder_head], self.training)
        return latent, self.projection(latent), output[0]
