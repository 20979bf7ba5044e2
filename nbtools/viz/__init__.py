"""Figures of a run: learning curves, report figures, the live dashboard, the per-layer heatmap."""

from nbtools.viz.curves import save_curves
from nbtools.viz.dashboard import Dashboard
from nbtools.viz.grad_heatmap import GradHeatmap, grad_heatmap
from nbtools.viz.report import Report, report

__all__ = ["Dashboard", "GradHeatmap", "Report", "grad_heatmap", "report", "save_curves"]
