"""Code generation for ``fused{kind="elementwise"|"reduction"}`` regions.

Algorithm. A region computes values over one iteration domain ``S = [d0, ..., d_{r-2}, N]``,
viewed as ``M = d0 * ... * d_{r-2}`` rows of ``N`` columns. Each program owns a tile of
``BLOCK_M`` rows and ``BLOCK_N`` columns:

1. unravel its row indices into ``(i0, ..., i_{r-2})`` once, and turn them into a base offset
   per input/output with that tensor's strides (a broadcast dim has stride 0, so a bias ``[N]``,
   a per-row scale ``[..., 1]`` or a ``[1, S, N]`` mask need no copy);
2. load each input once (fp32 registers for floats), run the region's equations in order with the
   ``triton`` rules of :mod:`.emit` (a value is a ``[BLOCK_M, BLOCK_N]`` tile or a per-row
   ``[BLOCK_M, 1]`` column);
3. row ops (the ``row`` trait: last-axis reductions, softmax, layer/RMS norm; reduction regions
   only) see the whole row: ``BLOCK_N >= N`` and masked lanes hold the reduction's identity;
4. store every region output with the tile mask.

Elementwise regions tile N as well (grid ``(cdiv(M, BLOCK_M), cdiv(N, BLOCK_N))``); reduction
regions use a single column block (grid ``(cdiv(M, BLOCK_M), 1)``). ``@triton.autotune`` picks
the tile keyed on ``(M, N)``; under the interpreter one config is kept.
"""

from __future__ import annotations

from typing import Sequence

import torch
import triton

from ...ir import Eqn, Graph
from ...ir.opdef import get_op
from ...ir.torch_dtypes import to_torch
from .emit import CodegenError, Emitter, tl_dtype
from .source import load_source, prune_for_interpreter

MAX_ROW = 16384  # longest row a reduction kernel holds in registers


def domain_rank(region: Graph) -> int:
    ranks = [v.type.rank for v in region.inputs] + [v.type.rank for e in region.eqns for v in e.outputs]
    return max(ranks) if ranks else 0


def is_row(e: Eqn) -> bool:
    """A reduction or normalisation over the last axis: it needs whole rows in the tile."""
    return get_op(e.op).has("row")


def is_reduction(region: Graph) -> bool:
    return any(is_row(e) for e in region.eqns)


def emit_body(em: Emitter, eqns: Sequence[Eqn], allow_rows: bool) -> None:
    """Emit equations in order with their ``triton`` rules; row ops only where ``allow_rows``."""
    for e in eqns:
        if is_row(e) and not allow_rows:
            raise CodegenError(f"{e.op} needs whole rows; it is not allowed here")
        em.emit(e)


def load_tile(name: str, ptr: str, off: str, col_stride: str, full: bool, is_float: bool) -> str:
    """``name = tl.load(...)`` for a [BLOCK_M, BLOCK_N] tile (``full``) or a [BLOCK_M, 1] column."""
    conv = ".to(tl.float32)" if is_float else ""
    if full:
        return f"{name} = tl.load({ptr} + {off}[:, None] + cols[None, :] * {col_stride}, mask=mask, other=0){conv}"
    return f"{name} = tl.load({ptr} + {off}[:, None], mask=rmask[:, None], other=0){conv}"


def unravel(rank: int) -> list[str]:
    """Lines splitting the row index vector into leading indices i0..i{rank-2}."""
    lines = ["r = rows"]
    for k in reversed(range(rank - 1)):
        lines.append(f"i{k} = r % D{k}")
        if k:
            lines.append(f"r = r // D{k}")
    return lines


def offset_expr(prefix: str, rank: int) -> str:
    terms = [f"i{k} * {prefix}_s{k}" for k in range(rank - 1)]
    return " + ".join(terms) if terms else "rows * 0"


def generate(region: Graph, kind: str) -> str:
    """Triton source of a kernel named ``kernel`` computing ``region`` (see the module docstring)."""
    rank = domain_rank(region)
    if rank < 1:
        raise CodegenError("a rank-0 region needs no kernel")
    reduction = is_reduction(region)
    n_in, n_out = len(region.inputs), len(region.outputs)
    ptrs = [f"in{i}" for i in range(n_in)] + [f"out{i}" for i in range(n_out)]
    dims = [f"D{k}" for k in range(rank - 1)]
    strides = [f"{p}_s{k}" for p in ptrs for k in range(rank)]
    em = Emitter()
    for line in unravel(rank):
        em.line(line)
    for i, v in enumerate(region.inputs):
        em.line(f"off_in{i} = {offset_expr(f'in{i}', rank)}")
        full = _is_full(v.type.shape, rank)
        name = em.fresh("x")
        em.line(load_tile(name, f"in{i}", f"off_in{i}", f"in{i}_s{rank - 1}", full, v.type.dtype.is_float))
        em.names[v] = name
    emit_body(em, region.eqns, reduction)
    for i, v in enumerate(region.outputs):
        val = em.ref(v)
        full = _is_full(v.type.shape, rank)
        em.line(f"off_out{i} = {offset_expr(f'out{i}', rank)}")
        cast = f"({val}).to({tl_dtype(v.type.dtype)})"
        if full:
            em.line(f"tl.store(out{i} + off_out{i}[:, None] + cols[None, :] * out{i}_s{rank - 1}, "
                    f"tl.broadcast_to({cast}, (BLOCK_M, BLOCK_N)), mask=mask)")
        else:
            em.line(
                f"tl.store(out{i} + off_out{i}[:, None], tl.broadcast_to({cast}, (BLOCK_M, 1)), mask=rmask[:, None])"
            )
    configs = _configs(reduction)
    args = ",\n    ".join(
        [
            "# pointers: region inputs, then outputs\n    " + ", ".join(ptrs),
            "# shape: rows, columns, leading dims\n    " + ", ".join(["M", "N", *dims]),
            "# strides (elements) per tensor and dim; 0 where broadcast\n    " + ", ".join(strides),
            "# tile sizes\n    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr",
        ]
    )
    body = "\n".join(em.lines)
    doc = (
        f'    """Fused {kind} region: {", ".join(e.op for e in region.eqns)} (see pared.backends.triton.pointwise)."""'
    )
    return f"""import triton
import triton.language as tl


@triton.autotune(configs=[{configs}], key=["M", "N"], prune_configs_by={{"early_config_prune": prune}})
@triton.jit
def kernel(
    {args},
):
{doc}
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rmask = rows < M
    mask = rmask[:, None] & (cols < N)[None, :]
{body}
"""


def _is_full(shape, rank: int) -> bool:
    """Whether a tensor varies along the domain's last axis (else it is loaded as a per-row column)."""
    return len(shape) >= 1 and shape[-1] != 1


def _configs(reduction: bool) -> str:
    if reduction:  # BLOCK_N is set per call to cover the row; tune rows per program and warps
        opts = [(1, 4), (2, 4), (4, 8), (8, 8)]
        return ", ".join(f'triton.Config({{"BLOCK_M": {m}}}, num_warps={w})' for m, w in opts)
    opts = [(4, 64, 4), (16, 128, 4), (8, 256, 8), (32, 64, 4), (1, 1024, 8)]
    return ", ".join(f'triton.Config({{"BLOCK_M": {m}, "BLOCK_N": {n}}}, num_warps={w})' for m, n, w in opts)


class PointwiseKernel:
    """Host wrapper of a generated elementwise/reduction kernel: call it with the region's inputs.

    Inputs are torch tensors on one device (CUDA, or CPU under the interpreter) broadcasting to
    the region's domain; returns the region's outputs as new contiguous tensors.
    """

    def __init__(self, region: Graph, kind: str = "elementwise"):
        self.region = region
        self.kind = kind
        self.rank = domain_rank(region)
        self.reduction = is_reduction(region)
        self.source = generate(region, kind)
        self.kernel = load_source(self.source, "kernel", {"prune": prune_for_interpreter})

    def __call__(self, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if len(xs) != len(self.region.inputs):
            raise ValueError(f"fused {self.kind} kernel takes {len(self.region.inputs)} inputs, got {len(xs)}")
        xs = [torch.as_tensor(x) for x in xs]
        rank = self.rank
        dom = list(torch.broadcast_shapes(*[x.shape for x in xs]))
        dom = [1] * (rank - len(dom)) + dom
        N = dom[-1]
        M = 1
        for d in dom[:-1]:
            M *= d
        if self.reduction and N > MAX_ROW:
            raise CodegenError(f"rows of {N} elements exceed the reduction kernel's limit {MAX_ROW}")
        outs = []
        for v in self.region.outputs:
            shape = dom if _is_full(v.type.shape, rank) else dom[:-1] + [1]
            outs.append(torch.empty(shape, dtype=to_torch(v.type.dtype), device=xs[0].device))
        strides = []
        for t in (*xs, *outs):
            strides += _broadcast_strides(t, dom)
        args = [*xs, *outs, M, N, *dom[:-1], *strides]
        if M == 0 or N == 0:
            return tuple(o.reshape(_out_shape(v, o)) for v, o in zip(self.region.outputs, outs))
        if self.reduction:
            block_n = triton.next_power_of_2(N)
            grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]), 1)
            self.kernel[grid](*args, BLOCK_N=block_n)
        else:
            grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]), triton.cdiv(N, meta["BLOCK_N"]))
            self.kernel[grid](*args)
        return tuple(o.reshape(_out_shape(v, o)) for v, o in zip(self.region.outputs, outs))


def _out_shape(v, o: torch.Tensor) -> list[int]:
    """The output's own rank (e.g. a [N] output of a region whose domain is [1, N])."""
    shape = list(o.shape)
    return shape[len(shape) - v.type.rank :] if v.type.rank < len(shape) else shape


def _broadcast_strides(t: torch.Tensor, dom: list[int]) -> list[int]:
    """Element strides of ``t`` right-aligned to ``dom``; 0 along broadcast (size-1 or missing) dims."""
    pad = len(dom) - t.dim()
    out = []
    for k in range(len(dom)):
        j = k - pad
        if j < 0 or (t.shape[j] == 1 and dom[k] != 1):
            out.append(0)
        else:
            out.append(t.stride(j))
    return out


__all__ = ["CodegenError", "PointwiseKernel", "generate"]
