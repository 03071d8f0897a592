"""`make demo`: build a small MLP in pared's IR, print it, run it, cost it, clean it up.

Run with ``python -m pared.demo`` (or the ``pared-demo`` script). Needs only numpy.
"""

from __future__ import annotations

import sys

import numpy as np

from pared import __version__, ir
from pared.backends.reference import run_graph

# The first of these activations that the op registry defines is used between the layers.
_ACTIVATIONS = ("gelu", "relu", "silu", "tanh")


def build_mlp(d_in: int = 64, d_hidden: int = 128, d_out: int = 16, seed: int = 0) -> ir.Graph:
    """y = act(x W1^T + b1) W2^T + b2 over a dynamic batch dim B, with random numpy weights.

    Like a naive frontend, it also emits a duplicated bias add feeding a dead branch, which the
    cleanup pipeline (CSE, DCE) removes.
    """
    rng = np.random.default_rng(seed)
    b = ir.GraphBuilder()
    x = b.input(("B", d_in), "f32")
    w1 = b.param("fc1.weight", (rng.standard_normal((d_hidden, d_in)) / np.sqrt(d_in)).astype(np.float32))
    b1 = b.param("fc1.bias", (0.1 * rng.standard_normal(d_hidden)).astype(np.float32))
    w2 = b.param("fc2.weight", (rng.standard_normal((d_out, d_hidden)) / np.sqrt(d_hidden)).astype(np.float32))
    b2 = b.param("fc2.bias", (0.1 * rng.standard_normal(d_out)).astype(np.float32))

    h = b.dot_general(x, w1, contract=((1,), (1,)))  # x @ W1^T
    h1 = b.add(h, b1)
    h1_again = b.add(h, b1)  # a duplicate of h1 (CSE) ...
    b.mul(h1_again, 2.0)  # ... feeding a result nobody uses (DCE)
    act = next((a for a in _ACTIVATIONS if a in ir.OPS), None)
    a = b.op(act, h1) if act else h1
    y = b.dot_general(a, w2, contract=((1,), (1,)))
    out = b.add(y, b2)
    return b.build(out)


def graph_cost(g: ir.Graph, env: dict[str, int]) -> ir.Cost:
    total = ir.Cost(0, 0)
    for e in g.eqns:
        total = total + ir.eqn_cost(e, env)
    return total


def _rule(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 72 - len(title)))


def main(argv: list[str] | None = None) -> int:
    batch = 8
    print(f"pared {__version__}: IR-level demo (numpy only)")
    g = build_mlp()

    _rule(f"IR of a 2-layer MLP ({len(g.eqns)} equations, {len(g.params)} params)")
    print(ir.print_graph(g), end="")

    _rule(f"reference interpreter, batch B={batch}")
    x = np.random.default_rng(1).standard_normal((batch, 64)).astype(np.float32)
    (y,) = run_graph(g, [x])
    print(f"output shape {tuple(y.shape)} dtype {y.dtype}")
    print(f"checksum sum={float(y.sum()):.6f}  |y|_2={float(np.linalg.norm(y)):.6f}")

    _rule(f"cost per equation at B={batch}")
    env = {"B": batch}
    print(f"{'#':>3}  {'op':<14}{'flops':>12}{'bytes':>12}")
    for i, e in enumerate(g.eqns):
        c = ir.eqn_cost(e, env)
        print(f"{i:>3}  {e.op:<14}{c.flops:>12,}{c.bytes:>12,}")
    total = graph_cost(g, env)
    print(f"     {'total':<14}{total.flops:>12,}{total.bytes:>12,}")

    try:
        from pared.compiler.pass_manager import run_pipeline
    except ImportError:
        _rule("cleanup pipeline")
        print("(pared.compiler.pass_manager is not available in this build; skipped)")
        return 0

    _rule("cleanup pipeline (dce, cse, fold)")
    g2 = run_pipeline(g, "cleanup")
    print(f"before: {len(g.eqns)} equations   after: {len(g2.eqns)} equations")
    print(ir.print_graph(g2), end="")
    (y2,) = run_graph(g2, [x])
    print(f"max |y_cleaned - y| = {float(np.max(np.abs(y2 - y))):.3g}")
    c2 = graph_cost(g2, env)
    print(f"cost after cleanup: flops {c2.flops:,} (was {total.flops:,}), bytes {c2.bytes:,} (was {total.bytes:,})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
