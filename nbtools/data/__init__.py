"""Datasets: embedded synthetic sets that make every notebook run offline."""

from nbtools.data.synthetic import SyntheticVolumes

__all__ = ["SyntheticVolumes"]
