"""The calibration engine's executor on the reference interpreter: one equation at a time in numpy."""

from __future__ import annotations

import numpy as np

from ...ir.core import Eqn, Graph, Var
from .interpreter import run_graph


def one_eqn_graph(eqn: Eqn) -> tuple[Graph, list]:
    """``eqn`` alone as a graph whose inputs are its distinct Var operands."""
    ins = []
    for a in eqn.inputs:
        if isinstance(a, Var) and a not in ins:
            ins.append(a)
    for r in eqn.regions:
        ins += [v for v in r.free_vars() if v not in ins]
    return Graph(tuple(ins), (eqn,), eqn.outputs), ins


class ReferenceExecutor:
    """Each equation with the numpy reference interpreter."""

    name = "reference"

    def __init__(self, graph: Graph):
        self.graph = graph
        self._graphs: dict[int, tuple[Graph, list]] = {}

    def inputs(self, v: Var, x):
        if hasattr(x, "detach"):
            x = x.detach().cpu().numpy()
        return np.asarray(x)

    def set_weight(self, name: str, value) -> None:
        pass  # run() reads the current weight table

    def twin(self) -> ReferenceExecutor:
        """An executor for the dense shadow stream (run() is given the original weights)."""
        return ReferenceExecutor(self.graph)

    def run(self, i: int, eqn: Eqn, args, syms, weights):
        if i not in self._graphs:
            self._graphs[i] = one_eqn_graph(eqn)
        g, ins = self._graphs[i]
        pos = {id(a): k for k, a in enumerate(eqn.inputs)}
        values = [args[pos[id(v)]] if id(v) in pos else None for v in ins]
        if any(v is None for v in values):
            raise NotImplementedError("region ops with captured values are not supported by the calibration engine")
        return run_graph(g, values, weights, _symbols=syms)

    def as_float(self, x):
        return np.asarray(x, dtype=np.float32)

    def absmax(self, x):
        return np.abs(x).max(0)

    def to_numpy(self, x):
        return np.asarray(x)

    def host_view(self, x):
        return np.asarray(x, dtype=np.float32)
