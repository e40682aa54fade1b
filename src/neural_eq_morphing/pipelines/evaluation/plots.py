"""Plot nodes of the ``evaluation`` pipeline; each returns a matplotlib Figure.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot state, no display
needed) and written by kedro-datasets' ``matplotlib.MatplotlibDataset``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from sklearn.decomposition import PCA

from neural_eq_morphing.eq.parameters import PARAMETER_NAMES
from neural_eq_morphing.eq.response import clamped_response_db, frequency_grid

PARAMS = list(PARAMETER_NAMES)


def _grid(response: Mapping[str, Any]) -> np.ndarray:
    return frequency_grid(int(response["n_points"]), response["f_min"], response["f_max"])


def _frequency_axis(axis: Any) -> None:
    axis.set_xscale("log")
    axis.set_xlim(20, 20_000)
    axis.axhline(0.0, color="0.6", linewidth=0.6)
    axis.grid(True, which="both", alpha=0.25)


def plot_term_curves(
    presets: pd.DataFrame,
    settings_filtered: pd.DataFrame,
    label: str,
    evaluation: Mapping[str, Any],
) -> Figure:
    """Each term's generated EQ (its decoded centroid) over the spread of its real settings."""
    grid = _grid(evaluation["response"])
    terms = presets["term"].tolist()
    columns = 4
    rows = math.ceil(len(terms) / columns)
    figure = Figure(figsize=(4 * columns, 2.8 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, sharex=True, sharey=True, squeeze=False).ravel()
    generated = clamped_response_db(presets[PARAMS].to_numpy(), **evaluation["response"])
    for axis, term, curve, valid in zip(axes, terms, generated, presets["valid"], strict=False):
        rows = settings_filtered.loc[settings_filtered["term"] == term, PARAMS].to_numpy()
        real = clamped_response_db(rows, **evaluation["response"])
        low, median, high = np.percentile(real, [10, 50, 90], axis=0)
        axis.fill_between(grid, low, high, color="tab:blue", alpha=0.2, label="real: 10–90 %")
        axis.plot(grid, median, color="tab:blue", linewidth=1, label="real: median")
        axis.plot(grid, curve, color="tab:red", linewidth=2, label="generated (centroid)")
        note = "" if valid else " (out of range, clamped)"
        axis.set_title(f"{term}  (n={len(real)}){note}", fontsize=10)
        _frequency_axis(axis)
    for axis in axes[len(terms) :]:
        axis.set_visible(False)
    axes[0].legend(fontsize=8, loc="lower left")
    figure.supxlabel("frequency (Hz)")
    figure.supylabel("magnitude (dB)")
    figure.suptitle(f"{label}: generated EQ per term over the spread of its real settings")
    return figure


def plot_morph(morph: pd.DataFrame, label: str, evaluation: Mapping[str, Any]) -> Figure:
    """The interpolation between two terms as a family of EQ curves."""
    grid = _grid(evaluation["response"])
    curves = clamped_response_db(morph[PARAMS].to_numpy(), **evaluation["response"])
    source, target = morph["from_term"].iloc[0], morph["to_term"].iloc[0]
    figure = Figure(figsize=(8, 4.5), layout="constrained")
    axis = figure.subplots()
    cmap = colormaps["coolwarm"]
    for alpha, curve in zip(morph["alpha"], curves, strict=True):
        axis.plot(grid, curve, color=cmap(1 - alpha), linewidth=2, label=f"α = {alpha:.2f}")
    _frequency_axis(axis)
    axis.set_xlabel("frequency (Hz)")
    axis.set_ylabel("magnitude (dB)")
    axis.legend(title=f"{source} → {target}", fontsize=8)
    axis.set_title(f"{label}: {source} → {target} morph (decoded latent interpolation)")
    return figure


def plot_latent_map(latent_embeddings: pd.DataFrame, label: str) -> Figure:
    """2-D PCA of the latent space coloured by term; test-split points marked."""
    columns = [c for c in latent_embeddings.columns if c.startswith("latent_")]
    pca = PCA(n_components=2, svd_solver="full")
    points = pca.fit_transform(latent_embeddings[columns].to_numpy())
    explained = 100 * pca.explained_variance_ratio_
    terms = latent_embeddings["term"].value_counts().index.tolist()
    cmap = colormaps["tab20"]
    figure = Figure(figsize=(9, 7), layout="constrained")
    axis = figure.subplots()
    test = (latent_embeddings["split"] == "test").to_numpy()
    for index, term in enumerate(terms):
        rows = (latent_embeddings["term"] == term).to_numpy()
        colour = cmap(index % 20)
        axis.scatter(*points[rows & ~test].T, s=10, color=colour, alpha=0.6, label=term)
        axis.scatter(
            *points[rows & test].T, s=40, color=colour, marker="X", edgecolor="black", linewidth=0.6
        )
    axis.scatter([], [], s=40, color="white", marker="X", edgecolor="black", label="test split")
    axis.set_xlabel(f"PC 1 ({explained[0]:.1f} % of variance)")
    axis.set_ylabel(f"PC 2 ({explained[1]:.1f} % of variance)")
    axis.legend(fontsize=8, markerscale=1.5, ncol=2, loc="best")
    axis.set_title(f"{label}: latent space (PCA), coloured by term; × = test split")
    return figure


def plot_training_curves(training_history: pd.DataFrame, label: str) -> Figure:
    """Losses (train and validation), loss weights and learning rate per epoch.

    The total-loss panel also shows the total's weighted parts (reconstruction,
    contrastive weight × contrastive loss and, for a β-VAE, β × KL), so that a total
    rising with an annealed weight does not read as divergence. A design trained without
    the contrastive term (a β-VAE) gets its KL divergence in that term's panel.
    """
    history = training_history.sort_values("epoch")
    epoch = history["epoch"]
    kl_weight = history["kl_weight"] if "kl_weight" in history else pd.Series(0.0, history.index)
    variational = bool((kl_weight > 0).any())
    contrastive = bool((history["contrastive_weight"] > 0).any())
    figure = Figure(figsize=(11, 7), layout="constrained")
    axes = figure.subplots(2, 2, sharex=True).ravel()
    panels = [
        ("total loss", "train_loss", "val_loss"),
        ("reconstruction loss", "train_reconstruction", "val_reconstruction"),
        ("contrastive loss", "train_contrastive", "val_contrastive")
        if contrastive or not variational
        else ("KL divergence (nats per setting)", "train_kl", "val_kl"),
    ]
    for axis, (title, train, validation) in zip(axes, panels, strict=False):
        axis.plot(epoch, history[train], label="train")
        axis.plot(epoch, history[validation], label="validation")
        values = history[[train, validation]].to_numpy()
        if train == "train_loss":  # the total's parts, as the loss weighs them
            axis.plot(epoch, history["train_reconstruction"], "--", label="train: reconstruction")
            parts = []
            if contrastive:
                parts.append(
                    (
                        "weight × contrastive",
                        history["contrastive_weight"] * history["train_contrastive"],
                    )
                )
            if variational:
                parts.append(("β × KL", kl_weight * history["train_kl"]))
            for name, weighted in parts:
                axis.plot(epoch, weighted, ":", label=f"train: {name}")
                values = np.concatenate([values, weighted.to_numpy()[:, None]], axis=1)
        if values.min() > 0 and values.max() > 10 * values.min():
            axis.set_yscale("log")  # Log 1's reconstruction loss spans decades
        axis.set_title(title)
        axis.legend(fontsize=8)
        axis.grid(True, alpha=0.3)
    axis = axes[3]
    if variational and not contrastive:
        axis.plot(epoch, kl_weight, color="tab:green", label="β (KL weight)")
        axis.set_ylabel("β (KL weight)", color="tab:green")
    else:
        axis.plot(
            epoch, history["contrastive_weight"], color="tab:green", label="contrastive weight"
        )
        axis.set_ylabel("contrastive weight", color="tab:green")
    twin = axis.twinx()
    twin.plot(epoch, history["learning_rate"], color="tab:purple", label="learning rate")
    twin.set_ylabel("learning rate", color="tab:purple")
    axis.set_title("schedules")
    axis.grid(True, alpha=0.3)
    for axis in axes[2:]:
        axis.set_xlabel("epoch")
    figure.suptitle(f"{label}: training curves")
    return figure
