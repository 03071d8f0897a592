"""The reference interpreter: symbol binding, freeing dead values, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

import pared.ir as I
from pared.backends.reference import InterpreterError, run_graph
from pared.backends.reference import interpreter as interp


def _mlp():
    rng = np.random.default_rng(0)
    b = I.GraphBuilder()
    x = b.input(["B", 16])
    w = b.param("fc.weight", rng.standard_normal((8, 16)).astype(np.float32))
    y = b.dot_general(x, w, contract=((1,), (1,)))
    z = b.mul(y, 0.5)
    r = b.reshape(z, shape=(I.sym("B"), 2, 4))
    return b.build(r)


def test_runs_with_any_batch():
    g = _mlp()
    for n in (1, 5):
        x = np.random.default_rng(n).standard_normal((n, 16)).astype(np.float32)
        (out,) = run_graph(g, [x])
        np.testing.assert_allclose(out, (x @ g.weights["fc.weight"].T * 0.5).reshape(n, 2, 4), rtol=1e-6)


def test_symbol_mismatch_is_reported():
    b = I.GraphBuilder()
    x = b.input(["B", 4])
    y = b.input(["B", 4])
    g = b.build(b.add(x, y))
    with pytest.raises(InterpreterError, match="symbol B is 2 elsewhere but 3 here"):
        run_graph(g, [np.zeros((2, 4), np.float32), np.zeros((3, 4), np.float32)])


def test_rank_and_arity_errors():
    g = _mlp()
    with pytest.raises(InterpreterError, match="expected rank 2"):
        run_graph(g, [np.zeros(16, np.float32)])
    with pytest.raises(InterpreterError, match="takes 1 inputs, got 2"):
        run_graph(g, [np.zeros((1, 16)), np.zeros((1, 16))])


def test_missing_weight_names_param():
    g = I.parse(I.print_graph(_mlp()))
    with pytest.raises(InterpreterError, match="no value for param @fc.weight"):
        run_graph(g, [np.zeros((1, 16), np.float32)])
    (out,) = run_graph(g, [np.ones((1, 16), np.float32)], weights=_mlp().weights)
    assert out.shape == (1, 2, 4)


def test_dead_values_are_freed():
    g = _mlp()
    frees = interp._last_uses(g)
    freed = {v for vs in frees.values() for v in vs}
    # every intermediate except the output is freed right after its last use
    assert freed == {g.inputs[0], g.eqns[0].out, g.eqns[1].out}


def test_failing_equation_is_named():
    b = I.GraphBuilder()
    x = b.input([4])
    g = b.build(b.opaque(x, target="aten.foo", out_types=((I.dtypes.f32, (4,)),)))
    with pytest.raises(InterpreterError, match="opaque has no reference implementation"):
        run_graph(g, [np.zeros(4, np.float32)])


def test_opaque_calls_back_the_given_callable():
    b = I.GraphBuilder()
    x = b.input(["B", 4])
    y = b.opaque(x, target="aten.foo#0", out_types=((I.dtypes.f32, ("B", 4)), (I.dtypes.i64, ("B",))))
    g = b.build(b.mul(y[0], 2.0), y[1])
    x0 = np.arange(8, dtype=np.float32).reshape(2, 4)
    out, idx = run_graph(g, [x0], opaque={"aten.foo#0": lambda a: (np.cumsum(a, 1), a.argmax(1))})
    np.testing.assert_array_equal(out, 2 * np.cumsum(x0, 1))
    assert idx.dtype == np.int64 and idx.tolist() == [3, 3]
    with pytest.raises(InterpreterError, match="output of opaque"):  # a result of the wrong shape is caught
        run_graph(g, [x0], opaque={"aten.foo#0": lambda a: (a[:1], a.argmax(1))})
    with pytest.raises(InterpreterError, match=r"pass run_graph\(opaque="):
        run_graph(g, [x0], opaque={"aten.bar#0": np.negative})


def test_emulated_dtype_rounding_between_ops():
    b = I.GraphBuilder()
    x = b.input([3], "bf16")
    g = b.build(b.add(x, 1e-3))
    (out,) = run_graph(g, [np.array([1.0, 2.0, 256.0], np.float32)])
    assert out.tolist() == [1.0, 2.0, 256.0]  # 1e-3 is below bf16 resolution at these magnitudes
