"""Unary elementwise math: neg abs exp log sqrt rsqrt tanh sigmoid relu silu sin cos erf
reciprocal floor sign gelu, and logical_not.

Float references compute in float64 and return the input's storage dtype; the interpreter then
rounds to the declared dtype (bf16/fp8 emulation), so every result is rounded exactly once more.
"""

from __future__ import annotations

import math

import numpy as np

from .. import dtypes as DT
from ..errors import TypeInferenceError
from ..opdef import OpDef, attr, elementwise_cost, register
from ..types import TensorType
from .checks import FLOATS, NUMERIC

_SQRT_PI = math.sqrt(math.pi)


def erf(x: np.ndarray) -> np.ndarray:
    """erf in float64 to ~1e-15 relative error, vectorised (no scipy).

    |x| < 2: the Maclaurin series erf(x) = 2/sqrt(pi) * sum_n (-1)^n x^(2n+1) / (n! (2n+1)),
    40 terms (cancellation costs at most e^4 ~ 2 digits). |x| >= 2: Laplace's continued fraction
    erfc(x) = exp(-x^2)/sqrt(pi) / (x + (1/2)/(x + 1/(x + (3/2)/(x + ...)))) (A&S 7.1.14),
    60 levels evaluated bottom-up.
    """
    x = np.asarray(x, dtype=np.float64)
    a = np.abs(x)
    out = np.empty_like(a)
    small = a < 2.0
    xs = a[small]
    x2, term, total = xs * xs, xs.copy(), xs.copy()
    for n in range(1, 40):
        term = term * -x2 / n
        total += term / (2 * n + 1)
    out[small] = total * (2 / _SQRT_PI)
    xl = a[~small]
    with np.errstate(invalid="ignore", over="ignore"):
        f = xl.copy()
        for k in range(60, 0, -1):
            f = xl + (k / 2) / f
        out[~small] = 1.0 - np.exp(-xl * xl) / (_SQRT_PI * f)
    return np.copysign(out, x)


def _sigmoid(x):
    return np.exp(-np.logaddexp(0.0, -x))  # exp(-log(1 + e^-x)): no overflow for large |x|


def _gelu(x, *, approximate):
    if approximate == "tanh":  # Hendrycks & Gimpel (2016), eq. for the tanh approximation
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2)))


def _wide(fn):
    """Run ``fn`` in float64 and return the input's storage dtype."""

    def impl(x, **attrs):
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return np.asarray(fn(x.astype(np.float64), **attrs)).astype(x.dtype)

    return impl


def _rule(name, kinds):
    def infer(ts, attrs):
        (x,) = ts
        if x.dtype.kind not in kinds:
            raise TypeInferenceError(f"{name}: needs a {'/'.join(kinds)} input, got {x}")
        return [TensorType(x.shape, x.dtype)]

    return infer


def _unary(name, impl, dtypes, doc, flops=1, attrs=None):
    kinds = tuple(dict.fromkeys(d.kind for d in dtypes))
    register(
        OpDef(
            name,
            _rule(name, kinds),
            impl,
            attrs=attrs or {},
            arity=1,
            cost=elementwise_cost(flops),
            dtypes=dtypes,
            doc=doc,
            traits={"elementwise"},
        )
    )


_unary("neg", np.negative, NUMERIC, "-x")
_unary("abs", np.abs, NUMERIC, "|x|")
_unary("sign", np.sign, NUMERIC, "-1, 0 or 1 by the sign of x (nan stays nan)")
_unary("relu", lambda x: np.maximum(x, np.zeros((), x.dtype)), NUMERIC, "max(x, 0), nan propagates")
_unary("exp", _wide(np.exp), FLOATS, "e^x", flops=4)
_unary("log", _wide(np.log), FLOATS, "natural logarithm (nan below 0, -inf at 0)", flops=4)
_unary("sqrt", _wide(np.sqrt), FLOATS, "square root", flops=2)
_unary("rsqrt", _wide(lambda x: 1.0 / np.sqrt(x)), FLOATS, "1 / sqrt(x)", flops=2)
_unary("reciprocal", _wide(lambda x: 1.0 / x), FLOATS, "1 / x")
_unary("tanh", _wide(np.tanh), FLOATS, "hyperbolic tangent", flops=4)
_unary("sigmoid", _wide(_sigmoid), FLOATS, "1 / (1 + e^-x)", flops=4)
_unary("silu", _wide(lambda x: x * _sigmoid(x)), FLOATS, "x * sigmoid(x) (swish)", flops=5)
_unary("sin", _wide(np.sin), FLOATS, "sine", flops=4)
_unary("cos", _wide(np.cos), FLOATS, "cosine", flops=4)
_unary("erf", _wide(erf), FLOATS, "the error function", flops=8)
_unary("floor", np.floor, FLOATS, "round toward -inf")
_unary(
    "gelu",
    _wide(_gelu),
    FLOATS,
    "x * Phi(x); approximate='tanh' uses the tanh form (torch/jax conventions)",
    flops=10,
    attrs={"approximate": attr("str", "none", choices=("none", "tanh"))},
)
_unary("logical_not", np.logical_not, (DT.boolean,), "boolean not")
