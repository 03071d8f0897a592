"""Lower a pared Graph to a torch.fx GraphModule (the torch backend).

Each equation becomes one or a few torch calls chosen by the torch rules of the lowering table
(:mod:`pared.backends.lowering`; the rules live in :mod:`.ops` and :mod:`.quantized`). An op
without a rule, or whose rule declines, runs its decomposition (a ``fused`` region's equations)
or its numpy reference: slow, never a crash. Weights become buffers of the module,
on the device the caller names: they are constants of the compiled code. Symbolic dims are read
from the input shapes at run time (``x.size(i)``), so one module serves every batch size and
sequence length its graph allows. ``opaque`` equations call the torch callables the frontend kept.
"""

from __future__ import annotations

import operator
import re
from typing import Any, Callable, Mapping, Optional

import numpy as np
import torch
import torch.fx as fx

from ...ir import dims as D
from ...ir.core import Eqn, Graph, Literal, Param, Var
from ...ir.torch_dtypes import to_torch
from ..costmodel.choice import Decisions
from ..costmodel.measured import streams_weights
from ..costmodel.policy import reused_measurements
from ..lowering import lower_eqn
from . import quantized  # noqa: F401  (registers the qlinear rule: real int8/int4 CPU kernels)
from .ops import lower_decomposition, lower_reference


class LoweringError(Exception):
    """An equation could not be lowered; the message names it."""


class Lowerer:
    """State of one lowering: the FX graph being built and the values of IR atoms in it."""

    def __init__(self, graph: Graph, *, device=None, tensors: Optional[Mapping[str, torch.Tensor]] = None,
                 opaque: Optional[Mapping[str, Any]] = None):
        self.graph = graph
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.tensors = dict(tensors or {})
        self.opaque = dict(opaque or {})
        self.fx = fx.Graph()
        self.root = torch.nn.Module()
        self.env: dict[Var, fx.Node] = {}
        self._buffers: dict[Any, fx.Node] = {}
        self._params: dict[fx.Node, Param] = {}  # weights become buffers when the module is built
        self._names: set[str] = set()
        self._syms: dict[str, Any] = {}
        self._sym_sources: dict[str, tuple[fx.Node, int]] = {}
        self.skip: set[int] = set()
        # the cost model's kernel choices, one per quantized layer (timings an earlier lowering took reused)
        self.decisions: Decisions = Decisions(measurements=reused_measurements())
        # weights larger than the last-level cache stream from memory on every run: time kernels cold
        self.streams_weights = streams_weights(sum(int(np.asarray(v).nbytes) for v in graph.weights.values()))
        self.users: dict[Var, list[int]] = {}
        for i, e in enumerate(graph.eqns):
            for a in e.inputs:
                if isinstance(a, Var):
                    self.users.setdefault(a, []).append(i)
        for a in graph.outputs:
            if isinstance(a, Var):
                self.users.setdefault(a, []).append(-1)

    # ---- values ----
    def call(self, fn: Callable, *args, **kwargs) -> fx.Node:
        return self.fx.call_function(fn, args, kwargs)

    def method(self, name: str, *args, **kwargs) -> fx.Node:
        return self.fx.call_method(name, args, kwargs)

    def value(self, a):
        """The FX value of an atom: a node for tensors, a Python number for Literals."""
        if isinstance(a, Var):
            return self.env[a]
        if isinstance(a, Literal):
            return a.value
        if isinstance(a, Param):
            return self.param(a)
        raise LoweringError(f"bad atom {a!r}")

    def tensor(self, a):
        """Like :meth:`value` but Literals become 0-d constant tensors (for ops that need tensors)."""
        if isinstance(a, Literal):
            key = ("lit", a)
            if key not in self._buffers:
                t = torch.tensor(a.value, dtype=to_torch(a.type.dtype), device=self.device)
                self._buffers[key] = self._register(f"const_{len(self._buffers)}", t)
            return self._buffers[key]
        return self.value(a)

    def param(self, p: Param) -> fx.Node:
        """The node of a weight. Its tensor is made (on the device) only if some node reads it when
        the module is built (:meth:`_bind_params`): rules may read raw quantized weights instead."""
        key = ("param", p.name)
        if key not in self._buffers:
            node = self.fx.get_attr(self._reserve("p_" + p.name))
            self._params[node] = p
            self._buffers[key] = node
        return self._buffers[key]

    def _bind_params(self) -> None:
        for node, p in self._params.items():
            if not node.users:
                self.fx.erase_node(node)
                continue
            t = self.tensors.get(p.name)
            if t is None:
                w = self.graph.weight(p.name)
                t = w if isinstance(w, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(np.asarray(w)))
            t = t.detach().to(device=self.device, dtype=to_torch(p.type.dtype))
            self.root.register_buffer(node.target, t, persistent=False)

    def _reserve(self, name: str) -> str:
        """A buffer name derived from ``name`` that no other buffer or module attribute has."""
        safe = re.sub(r"[^A-Za-z0-9_]", "_", name)
        base, k = safe, 1
        while hasattr(self.root, safe) or safe in self._names:
            safe, k = f"{base}_{k}", k + 1
        self._names.add(safe)
        return safe

    def _register(self, name: str, t: torch.Tensor) -> fx.Node:
        safe = self._reserve(name)
        self.root.register_buffer(safe, t, persistent=False)
        return self.fx.get_attr(safe)

    # ---- symbolic dims ----
    def dim(self, d: D.Dim):
        """An int, or a node computing a symbolic dim from the input shapes at run time."""
        if isinstance(d, int):
            return d
        total = None
        for mono, coef in d.terms:
            term: Any = coef
            for s in mono:
                term = self.symbol(s) if term == 1 else self.call(operator.mul, term, self.symbol(s))
            total = term if total is None else self.call(operator.add, total, term)
        return total

    def symbol(self, s: str):
        if s not in self._syms:
            if s not in self._sym_sources:
                raise LoweringError(f"symbol {s} does not appear alone in any input shape; cannot read it at run time")
            node, axis = self._sym_sources[s]
            self._syms[s] = self.method("size", node, axis)
        return self._syms[s]

    def shape(self, shape, allow_infer: bool = True) -> list:
        """Dims for a torch shape argument; one symbolic dim is left to torch as -1."""
        sym = [i for i, d in enumerate(shape) if not isinstance(d, int)]
        if allow_infer and len(sym) == 1:
            return [-1 if i == sym[0] else d for i, d in enumerate(shape)]
        return [self.dim(d) for d in shape]

    # ---- the walk ----
    def run(self) -> fx.GraphModule:
        for i, v in enumerate(self.graph.inputs):
            node = self.fx.placeholder(f"in_{i}")
            self.env[v] = node
            for axis, d in enumerate(v.type.shape):
                if isinstance(d, D.Sym) and len(d.symbols) == 1 and d == D.Sym.name(next(iter(d.symbols))):
                    self._sym_sources.setdefault(str(d), (node, axis))
        for i, eqn in enumerate(self.graph.eqns):
            if i in self.skip:
                continue
            try:
                out = self.lower_eqn(eqn)
            except Exception as e:
                raise LoweringError(f"cannot lower equation {i} ({eqn.op}, {eqn.loc or 'no location'}): {e}") from e
            self.bind(eqn, out)
        outs = tuple(self.tensor(a) for a in self.graph.outputs)
        self.fx.output(outs)
        self._bind_params()
        gm = fx.GraphModule(self.root, self.fx, class_name="PAREDModule")
        gm.pared_kernel_decisions = self.decisions  # read by costmodel.kernel_choices and the report
        return gm

    def lower_eqn(self, eqn: Eqn):
        """The FX value(s) of one equation: its torch rule, else its decomposition, else its reference."""
        inputs = [self.value(a) for a in eqn.inputs]
        return lower_eqn("torch", self, eqn, inputs, decomposition=lower_decomposition, reference=lower_reference)

    def bind(self, eqn: Eqn, out) -> None:
        """Record a rule's result: a node (or tuple of nodes) for the equation's outputs."""
        if len(eqn.outputs) == 1:
            self.env[eqn.outputs[0]] = out
        elif isinstance(out, tuple):
            self.env.update(zip(eqn.outputs, out))
        else:
            for k, v in enumerate(eqn.outputs):
                self.env[v] = self.call(operator.getitem, out, k)

    def single_user(self, v: Var) -> Optional[int]:
        u = self.users.get(v, [])
        return u[0] if len(u) == 1 and u[0] >= 0 else None


def lower(graph: Graph, *, device=None, tensors: Optional[Mapping[str, torch.Tensor]] = None,
          opaque: Optional[Mapping[str, Any]] = None) -> fx.GraphModule:
    """An FX GraphModule computing ``graph``: call it with the graph's inputs; returns a tuple.

    Args:
        graph: the IR graph (with weight values for every param it uses).
        device: where weights live and where created tensors go (the inputs' device).
        tensors: torch tensors to use for some params instead of converting ``graph.weights``
            (the frontend passes the model's own tensors for weights no pass changed: no copy).
        opaque: the frontend's side table for ``opaque`` equations (target -> call).
    """
    return Lowerer(graph, device=device, tensors=tensors, opaque=opaque).run()
