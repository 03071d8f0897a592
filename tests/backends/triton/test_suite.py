"""Runs this directory's kernel tests under ``TRITON_INTERPRET=1`` in a subprocess (see conftest)."""

import os
import subprocess
import sys

import pytest

from .conftest import INTERPRETING


@pytest.mark.skipif(INTERPRETING, reason="already inside the interpreter run")
def test_triton_kernels_under_interpreter():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(os.path.dirname(here)))
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", here]
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    summary = proc.stdout.strip().splitlines()[-1:] if proc.stdout else []
    print(proc.stdout[-3000:])
    assert proc.returncode == 0, f"interpreter tests failed ({summary}):\n{proc.stdout[-6000:]}\n{proc.stderr[-2000:]}"
