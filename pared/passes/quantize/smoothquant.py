"""SmoothQuant: migrate activation outliers into the weights before W8A8 (Xiao et al., 2023).

For the linear layers reading one activation x (q/k/v, gate/up, ...), per input channel j:

    s_j = max|x_j|^alpha / max_i|W_ij|^(1 - alpha),    W' = W diag(s),   x' = x diag(1/s)

so ``x' W'^T = x W^T`` exactly in real arithmetic: the float function is unchanged. The 1/s is
folded into whatever produced x when that is free: the weight (and bias) of a ``layer_norm`` /
``rms_norm``, or the output rows of a linear layer feeding an elementwise ``mul`` (Llama's
``down_proj`` input is silu(gate) * up: scale up_proj's rows), provided x (and the folded path)
has no other reader. Otherwise an explicit ``mul(x, 1/s)`` is inserted and reported. Activation
maxima come from the calibration engine (``absmax``, float model, non-sequential).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ...ir import Graph, Param, TensorType, Var, make_eqn
from ..base import Pass, register_pass
from ..calibration import CalibrationRequest, calibrate, find_weight_sites
from ..context import PassContext
from ..rewrite import count_uses
from .linears import as_numpy, find_linears, linear_kind, select
from .scheme import QuantizationError


@register_pass("smoothquant")
@dataclass(frozen=True)
class SmoothQuant(Pass):
    """Scale activation channels down and weight channels up (function-preserving).

    Options:
        alpha: migration strength in [0, 1] (0.5 in the paper; 0.8 common for Llama).
        min_scale: lower clamp of s.
        ignore, targets: regexes of weight names to leave out / to include.
    """

    def needs_calibration(self) -> bool:
        return True

    alpha: float = 0.5
    min_scale: float = 1e-5
    ignore: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()

    def __post_init__(self):
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"smoothquant alpha must be in [0, 1], got {self.alpha}")

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        sites, _ = select(find_linears(graph), self.ignore, self.targets)
        by_index = {s.index: s for s in sites}
        wsites = [ws for ws in find_weight_sites(graph) if ws.index in by_index]
        absmax: dict[str, np.ndarray] = {}

        def rewrite(ws, w, stats):
            absmax[ws.param] = np.asarray(stats.absmax, np.float64)
            return None

        calibrate(graph, ctx, CalibrationRequest(self.name, wsites, lambda ws: ("absmax",), rewrite, sequential=False))
        groups: dict[Var, list] = {}
        for s in sites:
            if isinstance(s.x, Var) and s.name in absmax:
                groups.setdefault(s.x, []).append(s)
        return self._smooth(graph, ctx, groups, absmax)

    def _smooth(self, graph: Graph, ctx: PassContext, groups, absmax) -> Graph:
        weights: dict = {}
        eqns = list(graph.eqns)
        uses = count_uses(graph)
        producers = {v: i for i, e in enumerate(graph.eqns) for v in e.outputs}
        param_uses: dict[str, int] = {}
        for e in graph.eqns:
            for a in e.inputs:
                if isinstance(a, Param):
                    param_uses[a.name] = param_uses.get(a.name, 0) + 1
        inserts: dict[int, tuple] = {}
        new_params: dict = {}
        cur = lambda name: weights[name] if name in weights else as_numpy(graph.weight(name))
        for x, members in groups.items():
            act = np.max([absmax[s.name] for s in members], axis=0)
            if not np.isfinite(act).all():
                raise QuantizationError(f"{self.name}: activation maxima for {members[0].name} are not finite")
            wmax = np.max([np.abs(_nk(s, cur(s.name))).max(axis=0) for s in members], axis=0)
            s = np.power(np.maximum(act, 1e-12), self.alpha) / np.power(np.maximum(wmax, 1e-12), 1 - self.alpha)
            s = np.where((act > 0) & (wmax > 0), np.maximum(s, self.min_scale), 1.0)
            for m in members:
                w = cur(m.name)
                weights[m.name] = (w * s[None, :] if m.layout == "nk" else w * s[:, None]).astype(np.float32)
            how = self._fold(graph, x, s, uses, producers, param_uses, len(members), cur, weights)
            if how is None:
                first = min(m.index for m in members)
                name = f"{members[0].name}.smooth_inv"
                inserts[first] = (x, name, members)
                new_params[name] = (TensorType((len(s),), x.type.dtype), (1.0 / s).astype(np.float32))
                how = "mul inserted (x has other readers or no foldable producer)"
            for m in members:
                ctx.report.add(self.name, m.name, alpha=self.alpha, s_min=float(s.min()), s_max=float(s.max()),
                               act_max=float(act.max()), folded=how)
        # insert explicit x * (1/s) where nothing could absorb it
        out = []
        for i, e in enumerate(eqns):
            if i in inserts:
                x, name, members = inserts[i]
                t, _ = new_params[name]
                mul = make_eqn("mul", [x, Param(name, t)])
                out.append(mul)
                idx = {m.index for m in members}
                for j in idx:
                    ej = eqns[j]
                    eqns[j] = ej.replace(inputs=tuple(mul.outputs[0] if a is x else a for a in ej.inputs))
                e = eqns[i]
            out.append(e)
        g = graph.replace(eqns=tuple(out)) if inserts else graph
        return g.with_weights({**weights, **{n: v for n, (_, v) in new_params.items()}},
                              {n: t for n, (t, _) in new_params.items()})

    def _fold(self, graph, x, s, uses, producers, param_uses, n_members, cur, weights) -> Optional[str]:
        """Divide x's producer by s in place; returns how, or None when it cannot."""
        if uses[x] != n_members or x not in producers:
            return None
        e = graph.eqns[producers[x]]
        if e.op in ("layer_norm", "rms_norm"):
            ax = e.attrs["axes"]
            if len(ax) != 1 or ax[0] % x.type.rank != x.type.rank - 1 or len(e.inputs) < 2:
                return None
            ps = [a for a in e.inputs[1:] if isinstance(a, Param)]
            if len(ps) != len(e.inputs) - 1 or any(param_uses.get(p.name, 0) != 1 for p in ps):
                return None
            for p in ps:
                weights[p.name] = (cur(p.name) / s).astype(np.float32)
            return f"into {e.op} {ps[0].name}"
        if e.op == "mul":
            for a in e.inputs:
                if isinstance(a, Var) and a in producers and uses[a] == 1 and a.type.shape == x.type.shape:
                    pe = graph.eqns[producers[a]]
                    kind = linear_kind(pe)
                    if kind and param_uses.get(pe.inputs[1].name, 0) == 1:
                        w = cur(pe.inputs[1].name)
                        scaled = w / s[:, None] if kind == "nk" else w / s[None, :]
                        weights[pe.inputs[1].name] = scaled.astype(np.float32)
                        return f"into output rows of {pe.inputs[1].name}"
        return None


def _nk(site, w: np.ndarray) -> np.ndarray:
    return w if site.layout == "nk" else w.T
