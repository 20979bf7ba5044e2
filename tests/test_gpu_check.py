"""bench/gpu_check.py keeps working: without CUDA its reduced CPU pass runs, says so, and prints the table."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the full pass runs; this checks the CPU pass")
def test_the_reduced_cpu_pass_runs_and_says_so():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "bench/gpu_check.py", "--steps", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    ).stdout
    assert out.startswith("no CUDA here: reduced CPU pass")
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
    for precision in ("fp32", "bf16", "fp16"):
        assert "x the fp32 speed)" in rows[precision] and "skipped (pass --compile)" in rows[precision]
    assert "| yes |" in rows["frozen_fp16"] and "| yes |" in rows["fp16_forward_overflow"]
