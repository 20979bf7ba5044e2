"""Figures of a run: learning curves, report figures, the live dashboard, the per-layer heatmap,
runs compared, and viewers for the data."""

from nbtools.viz.compare import compare_curves
from nbtools.viz.curves import save_curves
from nbtools.viz.dashboard import Dashboard
from nbtools.viz.grad_heatmap import GradHeatmap, grad_heatmap
from nbtools.viz.picker import checkpoint_picker
from nbtools.viz.report import Report, report
from nbtools.viz.viewers import image_grid, mask_overlays, slice_viewer

__all__ = [
    "Dashboard",
    "GradHeatmap",
    "Report",
    "checkpoint_picker",
    "compare_curves",
    "grad_heatmap",
    "image_grid",
    "mask_overlays",
    "report",
    "save_curves",
    "slice_viewer",
]
