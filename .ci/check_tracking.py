"""Check what a finished ``kedro run`` left in the project's MLflow store.

Used by CI after the README's run commands: the newest run of a design must hold the
full metric histories, the logged model, the normaliser, the plots and the provenance
tags, and the logged semantic EQ must reproduce the catalog's latent embeddings of the
same run.

    python .ci/check_tracking.py --epochs 150 --design log2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from neural_eq_morphing.eq.parameters import PARAMETER_NAMES

PLOTS = ("term_curves", "morph", "latent_map", "training_curves")


def _at_version(dataset: str, version: str) -> Path:
    """``data/<dataset>/<version>/<file>``: a versioned dataset's file of one run."""
    path = Path("data") / dataset / version / Path(dataset).name
    if not path.exists():
        sys.exit(f"no {path}: the run's version of {dataset} is missing")
    return path


def main() -> None:
    """Run the checks; exit non-zero with a message on the first failure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--design", default="log2")
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    args = parser.parse_args()
    design = args.design

    mlflow.set_tracking_uri(args.tracking_uri)
    client = MlflowClient()
    experiment = client.get_experiment_by_name("neural_eq_morphing")
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.design = '{design}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        sys.exit(f"no MLflow run tagged design={design}")
    run = runs[0]
    problems = []
    for tag in ("seed", "git_commit", "safe_db_sha256"):
        if not run.data.tags.get(tag):
            problems.append(f"tag {tag} missing")
    for metric in ("train_loss", "val_loss", "contrastive_weight", "learning_rate"):
        steps = len(client.get_metric_history(run.info.run_id, f"{design}.{metric}"))
        if steps != args.epochs:
            problems.append(f"{design}.{metric} has {steps} steps, expected {args.epochs}")
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, f"{design}/plots")}
    artifacts |= {a.path for a in client.list_artifacts(run.info.run_id, design)}
    expected = {f"{design}/decoder_normaliser.json", f"{design}/evaluation_metrics.json"}
    expected |= {f"{design}/plots/{plot}.png" for plot in PLOTS}
    problems += [f"artifact {path} missing" for path in sorted(expected - artifacts)]

    models = mlflow.search_logged_models(
        experiment_ids=[experiment.experiment_id],
        filter_string=f"source_run_id = '{run.info.run_id}'",
        output_format="list",
    )
    logged = [m for m in models if m.name == f"{design}_semantic_eq"]
    if not logged:
        problems.append(f"no logged model {design}_semantic_eq")
    else:
        # The run's own files: the version Kedro saved them under is the run's tag run_id.
        version = run.data.tags["run_id"]
        model = mlflow.pyfunc.load_model(logged[0].model_uri)
        embeddings = pd.read_parquet(
            _at_version(f"07_model_output/{design}/latent_embeddings.parquet", version)
        ).set_index("entry_id")
        settings = pd.read_parquet(_at_version("03_primary/settings_filtered.parquet", version))
        settings = settings.set_index("entry_id").loc[embeddings.index]
        semantic_eq = model.get_raw_model()
        latent = semantic_eq.encode_settings(settings[list(PARAMETER_NAMES)].reset_index(drop=True))
        expected = embeddings.filter(like="latent_").to_numpy()
        error = np.abs(latent.filter(like="latent_").to_numpy() - expected).max()
        if error > 1e-5:
            problems.append(f"logged model's latents differ from the catalog's by {error:.2e}")
    if problems:
        sys.exit(f"{design} run {run.info.run_id}: " + "; ".join(problems))
    print(
        f"{design} run {run.info.run_id} ({run.info.run_name}): {args.epochs}-step histories, "
        f"model, decoder normaliser, plots and tags present; logged model reproduces the embeddings"
    )


if __name__ == "__main__":
    main()
