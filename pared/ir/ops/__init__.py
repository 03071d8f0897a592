"""The core op set. Importing this package registers every op."""

from . import elementwise, linalg, opaque, shape  # noqa: F401
