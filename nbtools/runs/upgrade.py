"""Run files written by earlier versions of nbtools, read in today's shape: the one place that knows them."""

from __future__ import annotations

VERSION = 2  # of checkpoints and metrics.json; 1: up to main f10d404 (no "version" in metrics.json)
