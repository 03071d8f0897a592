"""The Triton kernel tests run on the CPU interpreter, in a process of their own.

``TRITON_INTERPRET=1`` must be set before ``triton`` is first imported (Triton decorates its own
library functions at import), and setting it in a shared pytest process would leak into every
other test. So in a normal run this directory collects only ``test_suite.py`` (which re-runs the
directory in a subprocess with the variable set) and ``test_no_gpu.py`` (which needs no kernels);
inside that subprocess every module here is collected.
"""

import os

import pytest

pytest.importorskip("triton")
pytest.importorskip("torch")

INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"

if not INTERPRETING:
    collect_ignore_glob = [
        name for name in os.listdir(os.path.dirname(__file__))
        if name.startswith("test_") and name.endswith(".py") and name not in ("test_suite.py", "test_no_gpu.py")
    ]
