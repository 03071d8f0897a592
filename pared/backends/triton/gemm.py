"""GEMM templates for ``fused{kind="gemm"|"dequant_gemm"|"int8_gemm"}`` regions.

Algorithm (Triton tutorial 03, with a generated prologue and epilogue). The activations
``x[..., K]`` are viewed as ``A[M, K]``; each weight operand is read as a ``[K, N]`` tile stream.
Programs own ``BLOCK_M x BLOCK_N`` output tiles, launched in grouped order (``GROUP_M`` row
tiles share each column of weight tiles, for L2 reuse). For each ``BLOCK_K`` slice a program:

1. loads the A tile (fp16/bf16/fp32, or int8 for W8A8);
2. loads the weight tile in its stored format and turns it into a dense ``[BLOCK_K, BLOCK_N]``
   tile in registers (the prologue; layouts in docs/triton.md):

   * ``dense``: as is (either ``[N, K]`` or ``[K, N]`` storage, by strides);
   * ``int8``/``int4``: ``(q - zero) * scale`` with the scale of group ``k // group_size``;
     int4 values are two per byte along K, low nibble first;
   * ``sparse24``: 2:4 compressed values ``[N, K/2]`` plus 2-bit indices (a nibble per group
     of 4); the dense element ``k`` is the kept value whose index equals ``k % 4``, else 0;
   * ``sparse24_int4``: the same with the two kept values as int4 codes in one byte;

3. accumulates ``tl.dot`` in fp32 (int32 for int8 x int8); a dual GEMM (SwiGLU) keeps two
   accumulators fed by the same A tile.

The epilogue then runs the region's remaining equations on the accumulator tile (bias, residual,
activation, scales, quantize; row reductions such as per-token quantize when ``BLOCK_N``
covers N) and stores the region outputs. ``@triton.autotune`` keys on ``(M, N, K)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
import triton

from ...ir import Eqn, Graph
from ...ir.torch_dtypes import to_torch
from .emit import CodegenError, Emitter, round_to, tl_dtype
from .packing import FORMATS, pack_operand
from .pointwise import _broadcast_strides, _is_full, emit_body, is_row, load_tile, offset_expr, unravel
from .source import interpreting, load_source, prune_for_interpreter

MAX_ROW_N = 256  # epilogues with row reductions hold a whole output row in one tile


@dataclass
class Operand:
    """One weight operand of a dot: its stored format and the region inputs it is made of."""

    fmt: str  # one of packing.FORMATS
    inputs: tuple[int, ...]  # region input indices: (w,) dense, (q, scale[, zero]) quantized
    transposed: bool  # IR weight stored [N, K] (True) or [K, N]
    w_dtype: str  # float dtype of the dequantized weight (the dot's rhs dtype)
    group_size: Optional[int] = None
    signed: bool = True
    has_zero: bool = False


@dataclass
class GemmSpec:
    x_index: int
    operands: list[Operand]
    dots: list[Eqn]
    epilogue: list[Eqn]
    extra_inputs: list[int] = field(default_factory=list)
    rows_in_epilogue: bool = False


def analyze(region: Graph, formats: Optional[dict[int, str]] = None) -> GemmSpec:
    """Split a GEMM region into activations, weight operands, dots and epilogue.

    ``formats`` overrides the stored format of dot ``i``'s weight (``sparse24`` for a dense
    2:4 weight, ``sparse24_int4`` for a 2:4 int4 weight); by default it follows the IR.
    """
    formats = formats or {}
    index = {v: i for i, v in enumerate(region.inputs)}
    producer = {v: e for e in region.eqns for v in e.outputs}
    dots = [e for e in region.eqns if e.op == "dot_general"]
    if not 1 <= len(dots) <= 2:
        raise CodegenError(f"a GEMM region holds one or two dot_generals, got {len(dots)}")
    x = dots[0].inputs[0]
    if x not in index or any(d.inputs[0] is not x for d in dots):
        raise CodegenError("every dot of a GEMM region must read the same region input as activations")
    prologue: set[Eqn] = set()
    operands = []
    for i, d in enumerate(dots):
        (lc, rc), (lb, rb) = d.attrs["contract"], d.attrs["batch"]
        w = d.inputs[1]
        if lb or rb or w.type.rank != 2 or lc != (x.type.rank - 1,) or rc not in ((0,), (1,)):
            raise CodegenError("GEMM regions take x[..., K] times a 2-d weight")
        transposed = rc == (1,)
        if w in index:
            fmt = formats.get(i, "dense")
            operands.append(Operand(fmt, (index[w],), transposed, w.type.dtype.name))
            continue
        dq = producer.get(w)
        if dq is None or dq.op != "dequantize" or any(a not in index for a in dq.inputs):
            raise CodegenError("a GEMM weight must be a region input or a dequantize of region inputs")
        prologue.add(dq)
        q = dq.inputs[0]
        bits = q.type.dtype.bits
        k_len = w.type.shape[1 if transposed else 0]
        gs = dq.attrs["group_size"] if dq.attrs["group_axis"] is not None else k_len
        fmt = formats.get(i, "int4" if bits == 4 else "int8")
        operands.append(Operand(fmt, tuple(index[a] for a in dq.inputs), transposed, w.type.dtype.name, gs,
                                q.type.dtype.name.startswith("i"), len(dq.inputs) > 2))
    for op in operands:
        if op.fmt not in FORMATS:
            raise CodegenError(f"unknown weight format {op.fmt!r}; valid: {FORMATS}")
    epilogue = [e for e in region.eqns if e not in prologue and e.op != "dot_general"]
    used = {x, *(a for d in dots for a in d.inputs[1:]), *(a for e in prologue for a in e.inputs)}
    extra = [i for i, v in enumerate(region.inputs) if v not in used]
    rows = any(is_row(e) for e in epilogue)
    return GemmSpec(index[x], operands, dots, epilogue, extra, rows)


def _load_b(em: Emitter, i: int, op: Operand, a_dtype: str) -> str:
    """Lines loading operand ``i`` as a dense [BLOCK_K, BLOCK_N] tile; returns its name."""
    p = f"b{i}"
    b = f"w{i}"
    kk, nn = "ks[:, None]", "cols[None, :]"
    if op.fmt == "dense":
        em.line(f"{b} = tl.load({p}_0 + {kk} * {p}_0_sk + {nn} * {p}_0_sn, mask=bmask, other=0)")
        return b
    if op.fmt in ("int8", "int4"):
        if op.fmt == "int8":
            em.line(f"{b}q = tl.load({p}_0 + {kk} * {p}_0_sk + {nn} * {p}_0_sn, mask=bmask, other=0).to(tl.float32)")
        else:
            em.line(
                f"{b}q = tl.load({p}_0 + (ks // 2)[:, None] * {p}_0_sk + {nn} * {p}_0_sn, "
                "mask=bmask, other=0).to(tl.int32)"
            )
            em.line(f"{b}q = ({b}q >> ((ks % 2) * 4)[:, None]) & 15")
            if op.signed:
                em.line(f"{b}q = tl.where({b}q >= 8, {b}q - 16, {b}q)")
            em.line(f"{b}q = {b}q.to(tl.float32)")
        _dequant(em, b, f"{b}q", p, op, "ks")
        em.line(f"{b} = {round_to(b, _dt(op.w_dtype))}.to({a_dtype})")
        return b
    # 2:4 formats: one metadata byte per group of 4 along K holds the two kept positions
    em.line("grp = ks // 4")
    em.line(
        f"meta = tl.load({p}_1 + (grp // 2)[:, None] * {p}_1_sk + {nn} * {p}_1_sn, mask=bmask, other=0).to(tl.int32)"
    )
    em.line("meta = (meta >> ((grp % 2) * 4)[:, None]) & 15")
    em.line("pos = (ks % 4)[:, None]")
    if op.fmt == "sparse24":
        em.line(f"v0 = tl.load({p}_0 + (2 * grp)[:, None] * {p}_0_sk + {nn} * {p}_0_sn, mask=bmask, other=0)")
        em.line(f"v1 = tl.load({p}_0 + (2 * grp + 1)[:, None] * {p}_0_sk + {nn} * {p}_0_sn, mask=bmask, other=0)")
    else:
        em.line(f"byte = tl.load({p}_0 + grp[:, None] * {p}_0_sk + {nn} * {p}_0_sn, mask=bmask, other=0).to(tl.int32)")
        for j, shift in ((0, 0), (1, 4)):
            em.line(f"c{j} = (byte >> {shift}) & 15")
            if op.signed:
                em.line(f"c{j} = tl.where(c{j} >= 8, c{j} - 16, c{j})")
            _dequant(em, f"v{j}", f"c{j}.to(tl.float32)", p, op, "ks", scale_slot=2)
            em.line(f"v{j} = {round_to(f'v{j}', _dt(op.w_dtype))}.to({a_dtype})")
    em.line(f"{b} = tl.where(pos == (meta & 3), v0, tl.where(pos == ((meta >> 2) & 3), v1, 0.0)).to({a_dtype})")
    return b


def _dequant(em: Emitter, out: str, q: str, p: str, op: Operand, ks: str, scale_slot: int = 1) -> None:
    s, z = f"{p}_{scale_slot}", f"{p}_{scale_slot + 1}"
    em.line(f"g = {ks} // group_size{p[1:]}")
    em.line(f"sc = tl.load({s} + g[:, None] * {s}_sk + cols[None, :] * {s}_sn, mask=bmask, other=0).to(tl.float32)")
    if op.has_zero:
        em.line(f"zp = tl.load({z} + g[:, None] * {z}_sk + cols[None, :] * {z}_sn, mask=bmask, other=0).to(tl.float32)")
        em.line(f"{out} = ({q} - zp) * sc")
    else:
        em.line(f"{out} = {q} * sc")


def _dt(name: str):
    from ...ir.dtypes import get

    return get(name)


def operand_slots(op: Operand) -> int:
    """How many kernel tensors an operand is passed as (see packing.pack_operand)."""
    return {"dense": 1, "int8": 2, "int4": 2, "sparse24": 2, "sparse24_int4": 3}[op.fmt] + int(op.has_zero)


def generate(region: Graph, spec: GemmSpec, kind: str) -> str:
    x = region.inputs[spec.x_index]
    rank = x.type.rank
    a_dt = tl_dtype(x.type.dtype)
    int8 = x.type.dtype.name == "i8"
    ptrs, strides = ["a_ptr"], ["a_sm", "a_sk"]
    for i, op in enumerate(spec.operands):
        for j in range(operand_slots(op)):
            ptrs.append(f"b{i}_{j}")
            strides += [f"b{i}_{j}_sn", f"b{i}_{j}_sk"]
        if op.fmt != "dense" and op.fmt != "sparse24":
            strides.append(f"group_size{i}")
    for j in spec.extra_inputs:
        ptrs.append(f"in{j}")
        strides += [f"in{j}_s{k}" for k in range(rank)]
    for j in range(len(region.outputs)):
        ptrs.append(f"out{j}")
        strides += [f"out{j}_s{k}" for k in range(rank)]
    dims = [f"D{k}" for k in range(rank - 1)]
    em = Emitter(indent="        ")
    for i, op in enumerate(spec.operands):
        name = _load_b(em, i, op, a_dt)
        prec = ', input_precision="ieee"' if x.type.dtype.name == "f32" else ""
        if x.type.dtype.name == "bf16" and interpreting():
            # the CPU interpreter has no bf16 dot; bf16 products are exact in fp32
            em.line(f'acc{i} += tl.dot(a.to(tl.float32), {name}.to(tl.float32), input_precision="ieee")')
        else:
            em.line(f"acc{i} += tl.dot(a, {name}{prec})")
    loop = "\n".join(em.lines)
    ep = Emitter()
    for line in unravel(rank):
        ep.line(line)
    for i, d in enumerate(spec.dots):
        dt = d.out.type.dtype
        ep.bind(d.out, round_to(f"acc{i}", dt) if dt.is_float else f"acc{i}")
    for j in spec.extra_inputs:
        v = region.inputs[j]
        ep.line(f"off_in{j} = {offset_expr(f'in{j}', rank)}")
        name = ep.fresh("x")
        ep.line(
            load_tile(
                name, f"in{j}", f"off_in{j}", f"in{j}_s{rank - 1}", _is_full(v.type.shape, rank), v.type.dtype.is_float
            )
        )
        ep.names[v] = name
    emit_body(ep, spec.epilogue, spec.rows_in_epilogue)
    for j, v in enumerate(region.outputs):
        val = ep.ref(v)
        ep.line(f"off_out{j} = {offset_expr(f'out{j}', rank)}")
        cast = f"({val}).to({tl_dtype(v.type.dtype)})"
        if _is_full(v.type.shape, rank):
            ep.line(
                f"tl.store(out{j} + off_out{j}[:, None] + cols[None, :] * out{j}_s{rank - 1}, "
                f"tl.broadcast_to({cast}, (BLOCK_M, BLOCK_N)), mask=mask)"
            )
        else:
            ep.line(
                f"tl.store(out{j} + off_out{j}[:, None], tl.broadcast_to({cast}, (BLOCK_M, 1)), mask=rmask[:, None])"
            )
    acc_t = "tl.int32" if int8 else "tl.float32"
    accs = "\n".join(f"    acc{i} = tl.zeros((BLOCK_M, BLOCK_N), dtype={acc_t})" for i in range(len(spec.operands)))
    args = ",\n    ".join(
        [
            "# pointers: activations, weight operands, epilogue inputs, outputs\n    " + ", ".join(ptrs),
            "# shapes: A is [M, K], outputs [M, N] with leading dims D*\n    " + ", ".join(["M", "N", "K", *dims]),
            "# strides (elements) and group sizes\n    " + ", ".join(strides),
            "# meta-parameters\n"
            "    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr",
        ]
    )
    fmts = ", ".join(op.fmt for op in spec.operands)
    ops = ", ".join(e.op for e in spec.epilogue) or "none"
    return f'''import triton
import triton.language as tl


@triton.autotune(configs=[{_configs(spec)}], key=["M", "N", "K"], prune_configs_by={{"early_config_prune": prune}})
@triton.jit
def kernel(
    {args},
):
    """{kind}: A[M, K] @ W ({fmts}), epilogue: {ops} (see pared.backends.triton.gemm)."""
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    num_pid_in_group = GROUP_M * num_pid_n
    group_id = pid // num_pid_in_group
    first_pid_m = group_id * GROUP_M
    group_size_m = tl.minimum(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rmask = rows < M
    cmask = cols < N
{accs}
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        kmask = ks < K
        a = tl.load(a_ptr + rows[:, None] * a_sm + ks[None, :] * a_sk, mask=rmask[:, None] & kmask[None, :], other=0)
        bmask = kmask[:, None] & cmask[None, :]
{loop}
    mask = rmask[:, None] & cmask[None, :]
{chr(10).join(ep.lines)}
'''


# (BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, num_warps, num_stages): tutorial 03's list plus small-M tiles
# for decode (M <= 16), where the weight stream dominates and wide N/K tiles keep it coalesced.
GEMM_CONFIGS = [
    (128, 256, 64, 8, 8, 3),
    (64, 256, 32, 8, 4, 4),
    (128, 128, 32, 8, 4, 4),
    (128, 64, 32, 8, 4, 4),
    (64, 128, 32, 8, 4, 4),
    (64, 64, 64, 8, 4, 3),
    (32, 64, 32, 8, 2, 5),
    (16, 64, 128, 1, 4, 4),
    (16, 128, 128, 1, 4, 4),
    (16, 256, 64, 1, 8, 3),
]


def _configs(spec: GemmSpec) -> str:
    out = []
    for bm, bn, bk, gm, w, s in GEMM_CONFIGS:
        kw = {"BLOCK_M": bm, "BLOCK_K": bk, "GROUP_M": gm}
        if not spec.rows_in_epilogue:
            kw["BLOCK_N"] = bn
        out.append(f"triton.Config({kw!r}, num_warps={w}, num_stages={s})")
    if spec.rows_in_epilogue:
        out = list(dict.fromkeys(out))
    return ", ".join(out)


class GemmKernel:
    """Host wrapper of a generated GEMM region kernel: call it with the region's inputs.

    Weight operands are converted to their kernel layout (docs/triton.md) on first use and kept:
    weights are constants of compiled code. Checks: one device, K and N agree, 2:4 formats need
    K % 4 == 0, row-reducing epilogues need N <= MAX_ROW_N.
    """

    def __init__(self, region: Graph, kind: str = "gemm", formats: Optional[dict[int, str]] = None):
        self.region = region
        self.kind = kind
        self.spec = analyze(region, formats)
        self.source = generate(region, self.spec, kind)
        self.kernel = load_source(self.source, "kernel", {"prune": prune_for_interpreter})
        self._packed: dict[int, tuple] = {}

    def _operand(self, i: int, op: Operand, xs: Sequence[torch.Tensor]) -> list:
        ts = [xs[j] for j in op.inputs]
        key = tuple((t.data_ptr(), t._version, tuple(t.shape)) for t in ts)
        hit = self._packed.get(i)
        if hit is None or hit[0] != key:
            hit = (key, pack_operand(op, ts))
            self._packed[i] = hit
        return hit[1]

    def __call__(self, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        spec, region = self.spec, self.region
        if len(xs) != len(region.inputs):
            raise ValueError(f"fused {self.kind} kernel takes {len(region.inputs)} inputs, got {len(xs)}")
        x = xs[spec.x_index]
        K = x.shape[-1]
        a = x.reshape(-1, K)
        M = a.shape[0]
        args: list = [a]
        strides: list = [a.stride(0), a.stride(1)]
        N = None
        for i, op in enumerate(spec.operands):
            packed = self._operand(i, op, xs)
            if packed.n_k[1] != K or (N is not None and packed.n_k[0] != N):
                raise ValueError(f"{self.kind}: weight {i} is {packed.n_k} (N, K) but x has K={K}")
            N = packed.n_k[0]
            for t, (sn, sk) in zip(packed.tensors, packed.strides):
                args.append(t)
                strides += [sn, sk]
            if packed.group_size is not None:
                strides.append(packed.group_size)
        if spec.rows_in_epilogue and N > MAX_ROW_N:
            raise CodegenError(f"{self.kind}: a row-reducing epilogue needs N <= {MAX_ROW_N}, got {N}")
        dom = [*x.shape[:-1], N]
        for j in spec.extra_inputs:
            args.append(xs[j])
            strides += _broadcast_strides(xs[j], dom)
        outs = []
        for v in region.outputs:
            shape = dom if _is_full(v.type.shape, len(dom)) else dom[:-1] + [1]
            o = torch.empty(shape, dtype=to_torch(v.type.dtype), device=x.device)
            outs.append(o)
            args.append(o)
            strides += _broadcast_strides(o, dom)
        if M and N:
            extra = {}
            if spec.rows_in_epilogue:
                extra["BLOCK_N"] = max(16, triton.next_power_of_2(N))
            grid = lambda meta: (
                triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta.get("BLOCK_N", extra.get("BLOCK_N"))),
            )
            self.kernel[grid](*args, M, N, K, *dom[:-1], *strides, **extra)
        return tuple(outs)
