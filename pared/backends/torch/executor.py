"""The calibration engine's executor on the torch backend.

Each equation is lowered once per input shapes by the torch lowering table; weights are arguments
of the lowered function, so a rewritten weight needs no new lowering. An equation torch cannot
lower runs on the reference interpreter.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping, Optional

import numpy as np
import torch

from ...ir.build import make_eqn
from ...ir.core import Eqn, Graph, Literal, Param, Var
from ...ir.shapes import resolve_dims
from ...ir.torch_dtypes import to_torch
from ..reference.executor import ReferenceExecutor


def _shape(x) -> tuple:
    return tuple(int(d) for d in getattr(x, "shape", np.shape(x)))


class TorchExecutor:
    """Each equation lowered once per input shapes by the torch backend's rule table; weights are
    arguments of the lowered function so a rewritten weight needs no new lowering."""

    name = "torch"

    def __init__(self, graph: Graph, opaque: Optional[Mapping[str, Any]]):

        from ...backends.torch import lower

        self.torch, self._lower, self._to_torch = torch, lower, to_torch
        self.graph = graph
        self.opaque = dict(opaque or {})
        self.ptypes = graph.param_types
        self._w: dict[str, Any] = {}
        self._fns: dict[tuple, tuple] = {}
        self._ref = ReferenceExecutor(graph)

    def inputs(self, v: Var, x):
        t = x if isinstance(x, self.torch.Tensor) else self.torch.as_tensor(np.asarray(x))
        return t.to(self._to_torch(v.type.dtype)) if t.dtype != self._to_torch(v.type.dtype) else t

    def weight(self, name: str):
        if name not in self._w:
            w = self.graph.weight(name)
            if not isinstance(w, self.torch.Tensor):
                with warnings.catch_warnings():  # read-only arrays are only read here; set_weight replaces
                    warnings.simplefilter("ignore", UserWarning)
                    w = self.torch.from_numpy(np.ascontiguousarray(np.asarray(w)))
            t = w
            self._w[name] = t.detach().to(self._to_torch(self.ptypes[name].dtype))
        return self._w[name]

    def set_weight(self, name: str, value) -> None:
        self._w[name] = self.torch.from_numpy(np.ascontiguousarray(value)).to(self._to_torch(self.ptypes[name].dtype))

    def release(self, name: str) -> None:
        """Drop the tensor held for weight ``name`` (the engine calls this after its last use, so
        an out-of-core run holds one layer's weights at a time; a later use reads it again)."""
        self._w.pop(name, None)

    def twin(self) -> TorchExecutor:
        """An executor for the dense shadow stream: the same lowered equations, the original weights."""
        other = TorchExecutor(self.graph, self.opaque)
        other._fns = self._fns
        return other

    def run(self, i: int, eqn: Eqn, args, syms, weights):
        # the lowering is specialised to this batch's shapes: key on the operands' shapes AND the
        # bound symbols (an op such as broadcast_in_dim or iota takes its shape from them alone)
        key = (i, tuple(_shape(a) if isinstance(a, self.torch.Tensor) else None for a in args),
               tuple(sorted(syms.items())))
        if key not in self._fns:
            self._fns[key] = self._build(eqn, syms)
        fn, picks = self._fns[key]
        if fn is None:  # no torch lowering: the numpy reference for this one equation
            np_args = [a.numpy() if isinstance(a, self.torch.Tensor) else a for a in args]
            tables = {n: np.asarray(weights[n]) for n in weights}
            return [
                self.torch.from_numpy(np.ascontiguousarray(o)) for o in self._ref.run(i, eqn, np_args, syms, tables)
            ]
        values = [self.weight(eqn.inputs[k].name) if isinstance(eqn.inputs[k], Param) else args[k] for k in picks]
        with self.torch.no_grad():
            out = fn(*values)
        return list(out)

    def _build(self, eqn: Eqn, syms):
        """Lower ``eqn`` specialised to the concrete shapes of this batch: every Var and Param
        operand becomes an input of a one-equation graph (Literals stay)."""
        if eqn.regions:
            return None, None

        new_inputs, picks, seen = [], [], {}
        for k, a in enumerate(eqn.inputs):
            if isinstance(a, Literal):
                new_inputs.append(a)
                continue
            ident = (type(a), a.name) if isinstance(a, Param) else id(a)
            if ident not in seen:
                t = a.type
                seen[ident] = Var(t.with_(shape=t.concrete_shape(syms)))
                picks.append(k)
            new_inputs.append(seen[ident])
        try:
            attrs = {n: resolve_dims(v, syms) for n, v in eqn.attrs.items()}
            e = make_eqn(eqn.op, new_inputs, attrs, (), eqn.loc)
            g = Graph(tuple(seen.values()), (e,), e.outputs)
            return self._lower(g, opaque=self.opaque), picks
        except Exception:  # noqa: BLE001 - unlowerable ops fall back to the reference
            return None, None

    def as_float(self, x):
        return x.detach().float()

    def absmax(self, x):
        return x.abs().amax(0)

    def to_numpy(self, x):
        return x.detach().cpu().numpy() if isinstance(x, self.torch.Tensor) else np.asarray(x)

    def host_view(self, x):
        """``x`` as a numpy array sharing its memory when it is a float32 CPU tensor (else None)."""
        t = self.torch
        if isinstance(x, t.Tensor) and x.device.type == "cpu" and x.dtype == t.float32:
            return x.detach().numpy()
        return None
