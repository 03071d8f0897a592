"""GPU kernel benchmarks: the performance references of docs/triton.md on Llama-3-8B shapes.

Each case prints its time and its ratio to cuBLAS bf16 (``torch.matmul``) measured in the same
run, plus ``torch._int_mm`` for W8A8 and torchao's kernels when installed, with the device name;
``--results RESULTS.md`` replaces that file's gpu_kernels section with the rows (the old one goes
to ``history/gpu_kernels.md`` beside it). Without a CUDA GPU it says so and exits with status 2
(it never falls back to the interpreter: timings there mean nothing).

    python benchmarks/gpu_kernels.py [--quick] [--results RESULTS.md]
"""

# ruff: noqa: B023  (each lambda is timed at once, inside its loop iteration)
from __future__ import annotations

import argparse
import sys
from typing import Callable

import numpy as np


def _bench(fn: Callable, warmup: int = 10, rep: int = 50) -> float:
    import triton.testing

    return triton.testing.do_bench(fn, warmup=warmup, rep=rep) * 1e-3  # seconds


def _linear_region(M, N, K, dtype="bf16", epilogue=None):
    from pared.ir import GraphBuilder

    b = GraphBuilder()
    x, w = b.input([M, K], dtype), b.input([N, K], dtype)
    y = b.dot_general(x, w, contract=((1,), (1,)))
    extra = []
    if epilogue == "bias_silu_mul_quant":
        bias, w2 = b.input([N], dtype), b.input([N, K], dtype)
        extra = [bias, w2]
        u = b.dot_general(x, w2, contract=((1,), (1,)))
        h = b.mul(b.silu(b.add(y, bias)), u)
        y = b.quantize(h, b.input([], dtype), dtype="i8")  # static scale: a pure epilogue
    return b.build(y), extra


def _dequant_region(M, N, K, qdtype, group, dtype="bf16"):
    from pared.ir import GraphBuilder

    b = GraphBuilder()
    x, q, s = b.input([M, K], dtype), b.input([N, K], qdtype), b.input([N, K // group], dtype)
    w = b.dequantize(q, s, dtype=dtype, group_axis=1, group_size=group)
    return b.build(b.dot_general(x, w, contract=((1,), (1,))))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one shape per case")
    ap.add_argument(
        "--results", help="replace the gpu_kernels section of this markdown file (e.g. benchmarks/RESULTS.md)"
    )
    args = ap.parse_args(argv)
    try:
        import torch
        import triton  # noqa: F401
    except ImportError as e:
        print(f"gpu_kernels: needs torch and triton ({e}); nothing measured")
        return 2
    if not torch.cuda.is_available():
        print(
            "gpu_kernels: no CUDA GPU on this machine (torch.cuda.is_available() is False); nothing "
            "measured. Run it on an H100/H200/A100; the kernels' CPU tests use TRITON_INTERPRET=1 instead."
        )
        return 2
    from pared.backends.triton import GemmKernel

    dev = torch.device("cuda")
    name = torch.cuda.get_device_name(dev)
    rows: list[tuple] = []
    bf16 = torch.bfloat16

    def record(case, shape, t, t_ref, note=""):
        rows.append((case, shape, t * 1e6, t_ref * 1e6, t_ref / t, note))
        print(f"{case:34s} {shape:22s} {t * 1e6:9.1f} us  bf16 {t_ref * 1e6:9.1f} us  x{t_ref / t:5.2f} {note}")

    shapes_dec = [(1, 28672, 4096), (1, 4096, 14336)]
    shapes = {
        "w4_m1": shapes_dec,
        "w4_m16": [(16, 28672, 4096), (16, 4096, 14336)],
        "prefill": [(2048, 4096, 4096), (2048, 28672, 4096)],
        "sparse": [(2048, 4096, 4096), (8192, 4096, 4096)],
        "sq": [(1, 28672, 4096), (16, 28672, 4096)],
    }
    if args.quick:
        shapes = {k: v[:1] for k, v in shapes.items()}
    print(f"device: {name}")
    for case, qd, key in (
        ("W4A16 g128 M=1", "i4", "w4_m1"),
        ("W4A16 g128 M=16", "i4", "w4_m16"),
        ("W4A16 prefill", "i4", "prefill"),
        ("W8A16 prefill", "i8", "prefill"),
    ):
        for M, N, K in shapes[key]:
            x = torch.randn(M, K, device=dev, dtype=bf16)
            w = torch.randn(N, K, device=dev, dtype=bf16)
            q = torch.randint(
                -8 if qd == "i4" else -128, 8 if qd == "i4" else 128, (N, K), device=dev, dtype=torch.int8
            )
            s = torch.rand(N, K // 128, device=dev, dtype=bf16) * 0.01
            k = GemmKernel(_dequant_region(M, N, K, qd, 128), "dequant_gemm")
            record(case, f"{M}x{N}x{K}", _bench(lambda: k(x, q, s)), _bench(lambda: torch.matmul(x, w.t())))
    for M, N, K in shapes["prefill"]:
        xi = torch.randint(-128, 128, (M, K), device=dev, dtype=torch.int8)
        wi = torch.randint(-128, 128, (N, K), device=dev, dtype=torch.int8)
        from pared.ir import GraphBuilder

        b = GraphBuilder()
        qx, qw = b.input([M, K], "i8"), b.input([N, K], "i8")
        sx, sw = b.input([M, 1], "f32"), b.input([N], "f32")
        y = b.cast(
            b.mul(b.mul(b.cast(b.dot_general(qx, qw, contract=((1,), (1,)), out_dtype="i32"), dtype="f32"), sx), sw),
            dtype="bf16",
        )
        k = GemmKernel(b.build(y), "int8_gemm")
        sxs, sws = torch.rand(M, 1, device=dev), torch.rand(N, device=dev)
        x, w = torch.randn(M, K, device=dev, dtype=bf16), torch.randn(N, K, device=dev, dtype=bf16)
        t_ref = _bench(lambda: torch.matmul(x, w.t()))
        record("W8A8 int8", f"{M}x{N}x{K}", _bench(lambda: k(xi, wi, sxs, sws)), t_ref)
        t_mm = _bench(lambda: torch._int_mm(xi, wi.t()))
        record("  torch._int_mm (peer)", f"{M}x{N}x{K}", t_mm, t_ref)
    for M, N, K in shapes["sparse"]:
        region, _ = _linear_region(M, N, K)
        x, w = torch.randn(M, K, device=dev, dtype=bf16), torch.randn(N, K, device=dev, dtype=bf16)
        w = w * (torch.rand_like(w.reshape(N, K // 4, 4)).argsort(-1).argsort(-1) < 2).reshape(N, K)
        k = GemmKernel(region, "gemm", {0: "sparse24"})
        record("2:4 bf16", f"{M}x{N}x{K}", _bench(lambda: k(x, w)), _bench(lambda: torch.matmul(x, w.t())))
    for M, N, K in shapes["sq"]:
        region = _dequant_region(M, N, K, "i4", 128)
        x = torch.randn(M, K, device=dev, dtype=bf16)
        q = torch.randint(-8, 8, (N, K), device=dev, dtype=torch.int8)
        q = q * (torch.rand(N, K // 4, 4, device=dev).argsort(-1).argsort(-1) < 2).reshape(N, K)
        s = torch.rand(N, K // 128, device=dev, dtype=bf16) * 0.01
        k = GemmKernel(region, "dequant_gemm", {0: "sparse24_int4"})
        w = torch.randn(N, K, device=dev, dtype=bf16)
        record("2:4 + int4", f"{M}x{N}x{K}", _bench(lambda: k(x, q, s)), _bench(lambda: torch.matmul(x, w.t())))
    M, N, K = 2048, 14336, 4096
    region, _ = _linear_region(M, N, K, epilogue="bias_silu_mul_quant")
    bare, _ = _linear_region(M, N, K)
    x, w, w2 = (torch.randn(*s_, device=dev, dtype=bf16) for s_ in ((M, K), (N, K), (N, K)))
    bias, sc = torch.randn(N, device=dev, dtype=bf16), torch.tensor(0.05, device=dev, dtype=bf16)
    kf, kb = GemmKernel(region, "gemm"), GemmKernel(bare, "gemm")
    t_bare = _bench(lambda: kb(x, w)) * 2  # the fused kernel does two GEMMs
    record(
        "GEMM+bias+SiLU*mul+int8 quant",
        f"{M}x{N}x{K}",
        _bench(lambda: kf(x, w, bias, w2, sc)),
        t_bare,
        "ratio vs 2 bare pared GEMMs (target >= 0.95)",
    )
    from pared.backends.triton import PointwiseKernel
    from pared.ir import GraphBuilder

    b = GraphBuilder()
    xr, rr, wr, sr = (
        b.input([8192, 4096], "bf16"),
        b.input([8192, 4096], "bf16"),
        b.input([4096], "bf16"),
        b.input([], "bf16"),
    )
    h = b.add(xr, rr)
    region = b.build(h, b.quantize(b.rms_norm(h, wr, axes=(1,)), sr, dtype="i8"))
    kr = PointwiseKernel(region, "reduction")
    tensors = [torch.randn(8192, 4096, device=dev, dtype=bf16) for _ in range(2)] + [
        torch.ones(4096, device=dev, dtype=bf16),
        torch.tensor(0.05, device=dev, dtype=bf16),
    ]
    t = _bench(lambda: kr(*tensors))
    moved = 8192 * 4096 * (2 + 2 + 2 + 1)
    print(f"residual+RMSNorm+quantize [8192,4096]: {t * 1e6:.1f} us, {moved / t / 1e12:.2f} TB/s")
    rows.append(
        ("residual+RMSNorm+quant", "8192x4096", t * 1e6, float("nan"), float("nan"), f"{moved / t / 1e12:.2f} TB/s")
    )
    try:
        import torchao  # noqa: F401

        print("torchao is installed: add its int4 kernels as peers here (not wired up yet)")
    except ImportError:
        print("torchao not installed: no torchao peer rows")
    if args.results:
        import datetime

        from results import write_section

        text = (
            f"## gpu_kernels\n\n- date {datetime.date.today().isoformat()}; {name}; torch {torch.__version__}\n"
            "- ratio: torch.matmul bf16 time / row time, measured in the same run (unless the note says otherwise)\n\n"
            "| case | shape | pared us | bf16 us | ratio | note |\n|---|---|---|---|---|---|\n"
        )
        text += "".join(f"| {r[0]} | {r[1]} | {r[2]:.1f} | {r[3]:.1f} | {r[4]:.2f} | {r[5]} |\n" for r in rows)
        write_section("gpu_kernels", text, results=args.results)
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    sys.exit(main())
