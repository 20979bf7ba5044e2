"""Every test and notebook run under pytest runs in smoke mode (tiny sizes; see nbtools.recipes)."""

import os

os.environ.setdefault("NBTOOLS_SMOKE", "1")
