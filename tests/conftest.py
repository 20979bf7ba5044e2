import os
import tempfile

import pytest
import torch

# The machine CI runs on has 2 cores; more threads than cores only adds contention.
torch.set_num_threads(2)

# nbtools' per-machine records (the file check's) go to a folder of this session, not ~/.cache; the
# CLI subprocesses the tests start inherit it.
os.environ.setdefault("NBTOOLS_CACHE_DIR", tempfile.mkdtemp(prefix="nbtools-test-cache-"))


@pytest.fixture(autouse=True)
def _threads_left_as_found():
    """A test that changes torch's thread count for the tests after it fails here: conv sums run in
    another order on another count, and the bit-exact resume tests after it would fail instead."""
    before = torch.get_num_threads()
    yield
    after = torch.get_num_threads()
    torch.set_num_threads(before)
    assert after == before, f"this test left torch.get_num_threads() at {after} (was {before})"
