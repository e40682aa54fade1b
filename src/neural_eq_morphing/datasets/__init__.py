"""Project-specific Kedro datasets."""

from neural_eq_morphing.datasets.safe_db_dataset import SafeDbRawDataset

__all__ = ["SafeDbRawDataset"]
