"""Figures of a run: learning curves now, the live dashboard and report figures in their own modules."""

from nbtools.viz.curves import save_curves
from nbtools.viz.viewers import image_grid, slice_viewer

__all__ = ["image_grid", "save_curves", "slice_viewer"]
