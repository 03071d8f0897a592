"""The core op set (docs/ops.md). Importing this package registers every op."""

from . import elementwise, linalg, nn, opaque, pool, quant, reduce, region, shape, unary  # noqa: F401
