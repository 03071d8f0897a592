"""JAX dtypes and avals as IR types, and the frontend's error."""

from __future__ import annotations

import numpy as np

from ...ir import dtypes as DT
from ...ir.errors import IRError
from ...ir.types import TensorType


class JaxFrontendError(IRError):
    """A jaxpr equation pared cannot map; the message names the primitive and the source line."""


_JAX_TO_IR = {jax_name: ir_name for ir_name, jax_name in DT.JAX_NAMES.items()}


def ir_dtype(dt) -> DT.DType:
    name = np.dtype(dt).name
    try:
        return DT.get(_JAX_TO_IR[name])
    except KeyError:
        raise JaxFrontendError(f"JAX dtype {name} has no pared IR dtype") from None


def ir_type(aval) -> TensorType:
    return TensorType(tuple(int(d) for d in aval.shape), ir_dtype(aval.dtype))
