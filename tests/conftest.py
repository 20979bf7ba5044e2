import os
import tempfile

import torch

# The machine CI runs on has 2 cores; more threads than cores only adds contention.
torch.set_num_threads(2)

# nbtools' per-machine records (the file check's) go to a folder of this session, not ~/.cache; the
# CLI subprocesses the tests start inherit it.
os.environ.setdefault("NBTOOLS_CACHE_DIR", tempfile.mkdtemp(prefix="nbtools-test-cache-"))
