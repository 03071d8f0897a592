# ruff: noqa: I001  (one import per line: each op group adds its own line)
"""The op set (docs/ops.md). Importing this package registers every op.

One module per group; a new group adds one line below.
"""

from . import attention  # noqa: F401
from . import elementwise  # noqa: F401
from . import linalg  # noqa: F401
from . import nn  # noqa: F401
from . import opaque  # noqa: F401
from . import pool  # noqa: F401
from . import qops  # noqa: F401
from . import quant  # noqa: F401
from . import reduce  # noqa: F401
from . import region  # noqa: F401
from . import shape  # noqa: F401
from . import topk  # noqa: F401
from . import train  # noqa: F401
from . import sparse  # noqa: F401
from . import unary  # noqa: F401
