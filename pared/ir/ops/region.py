"""``fused``: one op whose body is a sub-graph (a region), e.g. a kernel a fusion pass formed.

The region's inputs receive the op's inputs, in order; its outputs are the op's outputs. Its
decomposition is its region, inlined: what a backend without a kernel for the region runs.
"""

from __future__ import annotations

from .. import dtypes as DT
from ..errors import TypeInferenceError
from ..opdef import Cost, OpDef, attr, register
from ..regions import inline_region

# The region kinds the fusion passes form and the backends generate kernels for.
POINTWISE_KINDS = ("elementwise", "reduction")
GEMM_KINDS = ("gemm", "dequant_gemm", "int8_gemm")


def _infer(ts, attrs, regions):
    (body,) = regions
    want = [v.type for v in body.inputs]
    if want != list(ts):
        raise TypeInferenceError(
            f"fused[{attrs['kind']}]: region takes ({', '.join(map(str, want))}) "
            f"but the op gets ({', '.join(map(str, ts))})"
        )
    if not body.outputs:
        raise TypeInferenceError(f"fused[{attrs['kind']}]: region returns nothing")
    return [a.type for a in body.outputs]


def _impl(*args, regions, evaluate, kind):
    return tuple(evaluate(regions[0], list(args)))


def _cost(ins, outs, attrs):
    # The cost signature does not see the region, so this counts only the fused kernel's
    # traffic (its point: intermediates stay on chip) and one operation per output element.
    return Cost(sum(o.numel for o in outs), sum(t.nbytes for t in (*ins, *outs)))


register(
    OpDef(
        "fused",
        _infer,
        _impl,
        attrs={"kind": attr("str")},
        cost=_cost,
        regions=1,
        dtypes=tuple(DT.ALL.values()),
        doc="A sub-graph run as one kernel; `kind` names the pattern (e.g. 'dequant_matmul').",
        decompose=inline_region,
    )
)
