"""Every test and notebook run under pytest runs in smoke mode (tiny sizes; see nbtools.recipes), and the
notebooks' cells count as slow tests (nbval runs each notebook in a kernel: minutes in all)."""

import os

import pytest

os.environ.setdefault("NBTOOLS_SMOKE", "1")


def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.slow)
