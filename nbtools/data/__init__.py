"""Datasets: embedded synthetic sets that make every notebook run offline."""

from nbtools.data.report import DataIssue, DataReport
from nbtools.data.synthetic import SyntheticVolumes
from nbtools.data.validate import validate_dataset

__all__ = [
    "DataIssue",
    "DataReport",
    "SyntheticVolumes",
    "validate_dataset",
]
