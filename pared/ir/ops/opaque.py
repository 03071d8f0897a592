"""``opaque``: a framework call pared does not model (kept as is, run by its own backend).

The IR keeps only its output types and a ``target`` key; the frontend that made it keeps the
callable in a side table of the lowered module. The reference interpreter runs it only when the
caller hands it that table (``run_graph(..., opaque={target: fn})``, which the torch frontends do:
the callable then runs on the host framework, and the report names each such op); without one it
says which op it cannot run. Passes treat it as impure (never removed, merged or folded).
"""

from __future__ import annotations

from .. import dims as D
from ..dtypes import DType
from ..dtypes import get as get_dtype
from ..errors import TypeInferenceError
from ..opdef import Cost, OpDef, attr, register
from ..types import TensorType


def _infer(ts, attrs):
    out = []
    for item in attrs["out_types"]:
        if not (isinstance(item, tuple) and len(item) == 2):
            raise TypeInferenceError(f"opaque: out_types entries are (dtype, shape) pairs, got {item!r}")
        dt, shape = item
        dt = get_dtype(dt) if not isinstance(dt, DType) else dt
        out.append(TensorType(tuple(D.parse_dim(d) if isinstance(d, str) else d for d in shape), dt))
    if not out:
        raise TypeInferenceError("opaque: needs at least one output type")
    return out


register(
    OpDef(
        "opaque",
        _infer,
        None,
        attrs={"target": attr("str"), "out_types": attr("any")},
        cost=lambda ins, outs, attrs: Cost(0, sum(t.nbytes for t in (*ins, *outs))),
        pure=False,
        doc="A framework op pared does not know: target names it, out_types=((dtype,(dims...)),...) "
        "gives its results. Runs only on the backend of the framework it came from.",
    )
)
