import os

import pytest
import torch

os.environ.setdefault("NBTOOLS_SMOKE", "1")
torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.use_deterministic_algorithms(False)
    yield
