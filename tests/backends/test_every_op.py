"""Every op on every backend, against the reference interpreter.

The OpInfo samples (tests/ir/opinfo.py) of each op run on the torch and XLA backends (one graph
holding one equation per sample: one compile) and are compared with the reference interpreter
(itself checked against independent references in tests/ir/test_ops.py). The Triton backend's
kernel expressions run the same samples as one-equation fused regions under
``TRITON_INTERPRET=1`` (in a subprocess: the variable must be set before triton is imported).
And the lowering table is checked for holes: an op a backend claims with no rule (and no
decomposition) fails here unless :data:`NOT_LOWERED` says why.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import pared.backends.torch  # noqa: E402,F401  (registers the torch rules)
from pared.backends.lowering import get_lowering, lowerings  # noqa: E402
from pared.backends.reference.interpreter import run_graph  # noqa: E402
from pared.ir import OPS, GraphBuilder, TensorType, get_op, make_eqn  # noqa: E402
from pared.ir import dtypes as DT  # noqa: E402
from pared.ir.opdef import ops_with  # noqa: E402
from pared.ir.torch_dtypes import to_torch  # noqa: E402
from tests.ir.opinfo import OPINFOS, TOL, S  # noqa: E402

# (backend, op) -> why the backend has no lowering for the op. A claimed op without a rule (or a
# decomposition) that is not listed here fails test_every_claimed_op_is_lowered.
NOT_LOWERED = {
    ("xla", "opaque"): "a framework call kept by the torch/JAX frontend: only that framework's backend can run it",
}
# Lowerings known to differ from the reference: (backend, op, input dtype) -> why. Strict xfails,
# so a fix shows up as a failure that asks to remove the entry.
KNOWN_BUGS = {
    ("torch", "qlinear", DT.bf16): "the dense path calls F.linear with a bf16 input and an f32 weight (dtype error)",
    ("torch", "qlinear", DT.f16): "the dense path calls F.linear with an f16 input and an f32 weight (dtype error)",
}
# Documented tolerances wider than the op's own: (backend, op) -> (relative and absolute tolerance).
LOOSER = {
    # the quantized kernels keep scales in the activation dtype, and a weight-only layer run dense
    # skips the bf16 rounding of its activations (pared/backends/torch/quantized.py): bf16-close
    ("torch", "qlinear"): 2 * 2**-7,
}
# Samples whose inputs after the first are weights (Params), as in the graphs the passes make:
# the quantized kernels read them as constants.
WEIGHT_INPUTS = {"qlinear"}
# The input dtypes each backend runs the samples in, of those an op declares (an op declaring none
# of them runs its first; the reference runs every declared dtype in tests/ir/test_ops.py).
# torch computes nothing in fp8 (it has no fp8 arithmetic): fp8 values are only quantized to and
# dequantized from. XLA compiles each graph (~0.2 s): f32, and the integer forms that differ.
TORCH_DTYPES = {DT.f32, DT.f16, DT.bf16, DT.i32, DT.i8, DT.u8, DT.boolean}
XLA_DTYPES = {DT.f32}
XLA_ALSO = {
    "dot_general": {DT.i8},
    "div": {DT.i32},
    "reduce_sum": {DT.i8},
}  # int8 x int8 -> int32, truncation, wrapping


def _torch_dtypes(name):
    return TORCH_DTYPES | ({DT.f8e4m3, DT.f8e5m2} if get_op(name).has("quant") else set())


def _xla_dtypes(name):
    return XLA_DTYPES | XLA_ALSO.get(name, set())


def _cases(backend, dtypes, ops=None):
    for name in sorted(ops if ops is not None else OPINFOS):
        declared = OPS[name].dtypes
        want = dtypes(name) if callable(dtypes) else dtypes
        picked = [dt for dt in declared if dt in want] or list(declared[:1]) or [None]
        for dt in picked:
            bug = KNOWN_BUGS.get((backend, name, dt))
            marks = [pytest.mark.xfail(strict=True, reason=bug)] if bug else []
            yield pytest.param(name, dt, id=f"{name}-{dt}", marks=marks)


def _samples(name, dt):
    return OPINFOS[name].samples(dt, np.random.default_rng(zlib.crc32(f"{name}-{dt}".encode())))


def samples_graph(name, samples):
    """One graph applying ``name`` to each sample (one equation each: one compile for them all),
    the arrays it takes as inputs, and the number of outputs of each equation."""
    b = GraphBuilder()
    outs, feeds, counts = [], [], []
    for i, sample in enumerate(samples):
        atoms = []
        for k, arg in enumerate(sample.args):
            if not isinstance(arg, tuple):  # a Python number: a Literal operand
                atoms.append(arg)
                continue
            dt, a = arg
            if k and name in WEIGHT_INPUTS:
                atoms.append(b.param(f"s{i}.w{k}", a, type=TensorType(np.shape(a), dt)))
            else:
                atoms.append(b.input(TensorType(np.shape(a), dt)))
                feeds.append(np.asarray(a))
        out = b.op(name, *atoms, regions=sample.regions, **sample.attrs)
        out = out if isinstance(out, tuple) else (out,)
        outs += out
        counts.append(len(out))
    return b.build(*outs), feeds, counts


def assert_matches(name, samples, counts, got, want, graph, backend):
    """Each sample's outputs from ``backend`` (``got``) against the reference's (``want``)."""
    assert len(got) == len(want) == sum(counts)
    first = 0
    for sample, n in zip(samples, counts):
        args = [f"{a[0]}{list(np.shape(a[1]))}" if isinstance(a, tuple) else repr(a) for a in sample.args]
        what = f"{backend} {name}: {args} {sample.attrs}"
        for g, w, v in zip(got[first : first + n], want[first : first + n], graph.outputs[first : first + n]):
            g = np.asarray(g)
            dt = v.type.dtype
            assert g.shape == w.shape, f"{what}: shape {g.shape}, reference {w.shape}"
            if dt.is_float:
                tol = max(TOL[dt.name] * OPINFOS[name].tol, LOOSER.get((backend, name), 0.0))
                np.testing.assert_allclose(
                    g.astype(np.float64), w.astype(np.float64), rtol=tol, atol=tol, equal_nan=True, err_msg=what
                )
            else:
                np.testing.assert_array_equal(g.astype(np.int64), w.astype(np.int64), err_msg=what)
        first += n


# ---- torch -------------------------------------------------------------------------------------


def _to_torch(a, dt):
    return torch.from_numpy(np.array(a, order="C")).to(to_torch(dt))  # a copy: np.ascontiguousarray makes 0-d 1-d


def _from_torch(t):
    t = t.detach().cpu()
    return t.float().numpy() if t.dtype in (torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2) else t.numpy()


@pytest.mark.parametrize("name,dt", list(_cases("torch", _torch_dtypes)))
def test_torch_op_matches_reference(name, dt):
    from pared.backends.torch import lower

    samples = _samples(name, dt)
    g, feeds, counts = samples_graph(name, samples)
    with torch.no_grad():
        got = lower(g)(*[_to_torch(a, v.type.dtype) for a, v in zip(feeds, g.inputs)])
    assert_matches(name, samples, counts, [_from_torch(t) for t in got], run_graph(g, feeds), g, "torch")


# ---- xla ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,dt", list(_cases("xla", _xla_dtypes, set(OPINFOS) - {"opaque"})))
def test_xla_op_matches_reference(name, dt):
    jax = pytest.importorskip("jax")
    from pared.backends.xla import graph_params, lower, to_jax_array

    samples = _samples(name, dt)
    g, feeds, counts = samples_graph(name, samples)
    got = jax.jit(lower(g))(graph_params(g), *[to_jax_array(a, v.type.dtype) for a, v in zip(feeds, g.inputs)])
    assert_matches(name, samples, counts, got, run_graph(g, feeds), g, "xla")


# ---- the table has no holes --------------------------------------------------------------------


def _claimed(backend):
    if backend == "reference":
        return {n for n, op in OPS.items() if op.impl is not None}
    if backend == "triton":
        return ops_with("elementwise") | ops_with("row")
    return set(OPS)


@pytest.mark.parametrize("backend", ["reference", "torch", "xla", "triton"])
def test_every_claimed_op_is_lowered(backend):
    """torch and xla claim every op, reference every op with a numpy definition, triton the ops
    its generated kernels compute (what the fusion passes put in a kernel: the elementwise and
    row traits). A claimed op needs a rule, or a decomposition for the caller to fall back on."""
    if backend == "xla":
        pytest.importorskip("jax")
        import pared.backends.xla  # noqa: F401  (registers the rules)
    if backend == "triton":
        pytest.importorskip("triton")
        import pared.backends.triton  # noqa: F401
    missing = sorted(
        n
        for n in _claimed(backend) - set(lowerings(backend))
        if get_op(n).decompose is None and (backend, n) not in NOT_LOWERED
    )
    assert not missing, f"ops {backend} claims but does not lower (add a rule, or a reason to NOT_LOWERED): {missing}"
    stale = sorted(n for b, n in NOT_LOWERED if b == backend and get_lowering(n, backend) is not None)
    assert not stale, f"NOT_LOWERED lists ops {backend} now lowers: {stale}"
    if backend == "triton":
        extra = sorted(set(lowerings("triton")) - _claimed("triton"))
        assert not extra, f"triton rules for ops no fusion pass puts in a kernel (give the op its trait): {extra}"


def test_register_lowering(monkeypatch):
    """A decorator or a plain call; one rule per op and backend; a checker declines; names are checked."""
    from pared.backends import lowering
    from pared.ir import UnknownOpError

    monkeypatch.setattr(lowering, "_TABLE", {b: {} for b in lowering.BACKENDS})

    @lowering.register_lowering(("add", "sub"), "torch", checker=lambda eqn: eqn.op == "add")
    def rule(ctx, eqn, *xs):
        return "lowered"

    lowering.register_lowering("neg", "xla", rule)
    assert set(lowering.lowerings("torch")) == {"add", "sub"} and set(lowering.lowerings("xla")) == {"neg"}
    b = GraphBuilder()
    x = b.input((2,))
    add, sub = (make_eqn(op, [x, x]) for op in ("add", "sub"))
    assert lowering.get_lowering("add", "torch")(None, add) == "lowered"
    assert lowering.get_lowering("sub", "torch")(None, sub) is NotImplemented
    with pytest.raises(ValueError, match="already has a lowering for 'add'"):
        lowering.register_lowering("add", "torch", rule)
    with pytest.raises(UnknownOpError, match="did you mean"):
        lowering.register_lowering("ad", "torch", rule)
    with pytest.raises(ValueError, match="unknown backend 'tpu'"):
        lowering.get_lowering("add", "tpu")
    with pytest.raises(TypeError):
        lowering.lowerings("torch")["mul"] = rule  # read-only


def test_declined_rule_falls_back_to_decomposition_then_reference(monkeypatch):
    """A torch rule that declines runs the op's numpy reference; a fused region without a rule its body."""
    from pared.backends import lowering
    from pared.backends.torch import lower

    calls = []
    monkeypatch.setitem(lowering._TABLE["torch"], "tanh", lambda L, eqn, *xs: calls.append(eqn.op) or NotImplemented)
    inner = GraphBuilder()
    a = inner.input((2, 3))
    region = inner.build(inner.tanh(inner.mul(a, 2.0)))
    b = GraphBuilder()
    x = b.input((2, 3))
    g = b.build(b.op("fused", x, regions=[region], kind="elementwise"))
    gm = lower(g)
    assert calls == ["tanh"]
    assert any(getattr(n.target, "__name__", "") == "reference_tanh" for n in gm.graph.nodes)
    xs = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_allclose(gm(torch.from_numpy(xs))[0].numpy(), np.tanh(2 * xs), rtol=1e-6)


# ---- triton ------------------------------------------------------------------------------------


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def _pow_samples(dt, rng):
    """pow with a Literal exponent: the form the fusion passes put in a kernel (tensor exponents stay out)."""
    x = DT.round_to(dt, rng.uniform(0.1, 3.0, (3, 5)))
    return [S((dt, x), y) for y in (2.0, 0.5, -1.0, 3.0)]


KERNEL_SAMPLES = {"pow": _pow_samples}  # ops whose OpInfo samples are not kernel-shaped


def kernel_samples(name, dt):
    """The samples the fusion passes would put in a generated kernel, as one-equation regions of
    rank >= 1: (sample, region, input arrays, region kind)."""
    from pared.passes.fuse.ops import is_elementwise, is_row_op

    rng = np.random.default_rng(zlib.crc32(f"{name}-{dt}".encode()))
    samples = KERNEL_SAMPLES[name](dt, rng) if name in KERNEL_SAMPLES else _samples(name, dt)
    row = get_op(name).has("row")
    out = []
    for sample in samples:
        g, feeds, _ = samples_graph(name, [sample])
        e = g.eqns[0]
        if (is_row_op(e) if row else is_elementwise(e)) and e.out.type.rank >= 1:
            out.append((sample, g, feeds, "reduction" if row else "elementwise"))
    return out


@pytest.mark.skipif(
    not _interpreting(), reason="runs in the TRITON_INTERPRET=1 subprocess of test_triton_under_interpreter"
)
@pytest.mark.parametrize(
    "name,dt",
    list(_cases("triton", {DT.f32, DT.i32, DT.boolean}, ops_with("elementwise") | ops_with("row")))
    if _interpreting()
    else [],
)
def test_triton_op_matches_reference(name, dt):
    from pared.backends.triton import PointwiseKernel

    cases = kernel_samples(name, dt)
    if not cases:
        pytest.skip(f"no {dt} sample of {name} is one the fusion passes put in a kernel")
    for sample, region, feeds, kind in cases:
        outs = PointwiseKernel(region, kind)(*[_to_torch(a, v.type.dtype) for a, v in zip(feeds, region.inputs)])
        assert_matches(
            name, [sample], [len(outs)], [_from_torch(t) for t in outs], run_graph(region, feeds), region, "triton"
        )


@pytest.mark.skipif(_interpreting(), reason="already inside the interpreter run")
def test_triton_under_interpreter():
    """The Triton backend's kernel expressions for every op, in a process with ``TRITON_INTERPRET=1``
    (it must be set before triton is imported; it would leak into every other test here)."""
    pytest.importorskip("triton")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    probe = "from pared.backends.triton import check_device; check_device('cpu')"
    if subprocess.run([sys.executable, "-c", probe], cwd=root, env=env, capture_output=True).returncode:
        pytest.skip("triton's interpreter cannot run here")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", os.path.abspath(__file__), "-k", "triton_op"]
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (
        f"triton kernels differ from the reference:\n{proc.stdout[-6000:]}\n{proc.stderr[-2000:]}"
    )
