"""Project-specific Kedro datasets.

Import them from their modules (``neural_eq_morphing.datasets.safe_db_dataset``,
``neural_eq_morphing.datasets.torch_model``) so that using one does not import the other's
dependencies (torch, MLflow).
"""
