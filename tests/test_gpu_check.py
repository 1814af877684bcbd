"""bench/gpu_check.sh, the GPU path's check in minutes: it runs its checks only where CUDA is."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.sh"


def test_gpu_check_is_an_executable_script_that_parses():
    assert os.access(SCRIPT, os.X_OK)
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0


def test_gpu_check_refuses_without_cuda_in_one_line_with_exit_2(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": "", "GPU_CHECK_OUT": str(tmp_path)}
    done = subprocess.run([str(SCRIPT)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2
    assert done.stdout == "" and len(done.stderr.strip().splitlines()) == 1
    assert "no CUDA device" in done.stderr
    assert not any(tmp_path.iterdir()), "nothing ran"
