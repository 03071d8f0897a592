"""Import a torch FX graph (from Dynamo or torch.export) into a pared :class:`~pared.ir.Graph`.

The importer walks the FX nodes in order and maps each call onto the IR op set through the rule
table of :mod:`pared.frontends.torch.rules` (keyed by the call's target, with a default rule). A call
that makes a tensor from Python values alone (``torch.tensor([...])``, ``linspace``) is a constant
(:meth:`FxImporter.constant`): a broadcast Literal, or a ``const.<call>`` Param. A call no
rule handles becomes an ``opaque`` equation: the original torch callable is kept in a side table
(:class:`OpaqueCall`) that the torch backends run as is (the reference target calls it back), and
the report lists it (name, count, where). Weights arrive as placeholders (Dynamo lifts parameters
and buffers into graph inputs, torch.export lists them in its graph signature); they become named
graph Params whose names are the module paths (``layers.0.self_attn.q_proj.weight``). Symbolic
sizes (SymInts) become IR symbols named like torch's (``s0``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch
import torch.fx as fx

from ...ir import dims as D
from ...ir.build import make_eqn
from ...ir.core import Graph, Literal, Param, Var
from ...ir.torch_dtypes import from_torch
from ...ir.types import TensorType, scalar
from ...passes.context import Report
from . import linalg_rules, math_rules, pool_rules, shape_rules  # noqa: F401  (each registers into RULES)
from .rules import RULES, Unsupported


class FrontendError(Exception):
    """The graph cannot be imported at all (the torch.compile backend then runs it as is)."""


# -- placeholders: what each FX graph input is ------------------------------------------------


@dataclass(frozen=True)
class UserInput:
    """A tensor the caller passes at run time."""


@dataclass(frozen=True)
class Weight:
    """A parameter or buffer, treated as a constant named by its module path."""

    name: str
    value: torch.Tensor


@dataclass(frozen=True)
class SymInput:
    """A SymInt graph input (Dynamo passes sizes it made dynamic as extra arguments)."""


@dataclass(frozen=True)
class Constant:
    """A non-tensor input fixed at import time."""

    value: Any


Placeholder = Any  # UserInput | Weight | SymInput | Constant


@dataclass(eq=False)
class OpaqueCall:
    """A torch call pared keeps as is: ``fn(*args, **kwargs)`` where :class:`Slot` entries of the
    templates are filled with the eqn's inputs and :class:`~pared.ir.dims.Sym` entries with the
    current values of the symbols."""

    fn: Callable
    args: tuple
    kwargs: dict
    name: str
    where: str
    reason: str = ""
    in_types: tuple = ()

    @property
    def __name__(self) -> str:  # FX names the call site after it
        return "opaque_" + re.sub(r"[^A-Za-z0-9_]", "_", self.name)

    def __call__(self, *tensors):
        """Run the kept call on ``tensors`` (the eqn's inputs); symbols are read off their shapes."""
        env: dict[str, int] = {}
        for t, x in zip(self.in_types, tensors):
            for d, n in zip(t.shape, x.shape):
                if isinstance(d, D.Sym) and len(d.terms) == 1 and d.terms[0][1] == 1 and len(d.terms[0][0]) == 1:
                    env[d.terms[0][0][0]] = int(n)

        def fill(v):
            if isinstance(v, Slot):
                return tensors[v.index]
            if isinstance(v, D.Sym):
                return D.evaluate(v, env)
            return v

        return self.fn(*fx.node.map_aggregate(self.args, fill), **fx.node.map_aggregate(self.kwargs, fill))


@dataclass(frozen=True)
class Slot:
    index: int


@dataclass
class Imported:
    """An imported graph plus what the backend needs to run it in place of the FX graph.

    ``inputs[i]`` says how FX placeholder ``i`` maps (IR input index, or None when it is a weight,
    size or constant); ``outputs[j]`` is ``("ir", k)`` (graph output ``k``) or ``("const", v)``
    (a Python value or a symbolic Dim of the FX output).
    """

    graph: Graph
    opaque: dict[str, OpaqueCall]
    inputs: list[Optional[int]]
    outputs: list[tuple[str, Any]]
    sources: dict[str, torch.Tensor]
    report: Report = field(default_factory=Report)

    @property
    def opaque_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.opaque.values():
            out[c.name] = out.get(c.name, 0) + 1
        return out


# -- symbolic sizes ---------------------------------------------------------------------------


def sym_dim(x) -> D.Dim:
    """A torch size (int or SymInt) as an IR dim."""
    if isinstance(x, torch.SymInt):
        expr = x.node.expr
        if expr.is_number:
            return int(expr)
        return _sympy_dim(expr)
    if isinstance(x, (int,)) and not isinstance(x, bool):
        return int(x)
    raise Unsupported(f"size {x!r} is not an integer")


def _sympy_dim(expr) -> D.Dim:
    import sympy

    if expr.is_Integer:
        return int(expr)
    if expr.is_Symbol:
        return D.Sym.name(str(expr))
    if isinstance(expr, sympy.Add):
        out: D.Dim = 0
        for a in expr.args:
            out = D.add(out, _sympy_dim(a))
        return out
    if isinstance(expr, sympy.Mul):
        out = 1
        for a in expr.args:
            out = D.mul(out, _sympy_dim(a))
        return out
    if isinstance(expr, sympy.Pow) and expr.exp.is_Integer and int(expr.exp) > 0:
        return D.prod([_sympy_dim(expr.base)] * int(expr.exp))
    raise Unsupported(f"symbolic size {expr} is not a polynomial of symbols")


def ir_type(t) -> TensorType:
    """The IR type of a (fake) tensor."""
    return TensorType(tuple(sym_dim(d) for d in t.shape), from_torch(t.dtype))


def _meta(node: fx.Node):
    return node.meta.get("val", node.meta.get("example_value"))


# -- the importer -----------------------------------------------------------------------------


def _is_tensor(v) -> bool:
    return isinstance(v, (Var, Param))


class FxImporter:
    """Walks an FX graph, building IR equations; the rules of :mod:`.rules` call back into it."""

    def __init__(self, gm: fx.GraphModule, placeholders: Sequence[Placeholder]):
        self.gm = gm
        self.rules = RULES
        self.placeholders = list(placeholders)
        self.eqns: list = []
        self.inputs: list[Var] = []
        self.params: dict[str, Param] = {}
        self.sources: dict[str, torch.Tensor] = {}
        self.weights: dict[str, Any] = {}
        self.opaque: dict[str, OpaqueCall] = {}
        self.node: Optional[fx.Node] = None
        self._by_tensor: dict[int, Param] = {}

    # ---- helpers the rules use ----
    def emit(self, op: str, *inputs, **attrs):
        """Append ``op(*inputs, **attrs)``; returns its output Var (a tuple if several)."""
        eqn = make_eqn(op, inputs, attrs, loc=self.node.name if self.node is not None else "")
        self.eqns.append(eqn)
        return eqn.outputs[0] if len(eqn.outputs) == 1 else eqn.outputs

    def lit(self, value, dtype):
        """A scalar of ``dtype``: a Literal, or for a symbolic size a rank-0 tensor computed from it."""
        if isinstance(value, D.Sym):
            return self.cast(self.dim_value(value), dtype)
        if isinstance(value, torch.SymInt | torch.SymFloat | torch.SymBool):
            raise Unsupported("a symbolic scalar used as a tensor value")
        return Literal(value, scalar(dtype))

    def dim_value(self, d: D.Dim):
        """A symbolic size as a rank-0 i64 tensor: the sum of ``d`` ones (the IR has no size op)."""
        ones = self.emit("broadcast_in_dim", Literal(1, scalar("i64")), shape=(d,), dims=())
        return self.emit("reduce_sum", ones, axes=(0,), keepdims=False)

    def constant(self, value: torch.Tensor):
        """A tensor whose value is known at import time, as IR: a broadcast Literal when every
        element is equal (empty and 0-d tensors included), else a graph constant (a Param named
        ``const.<call>``, its value in the weight table like a buffer's)."""
        value = value.detach()
        flat = value.reshape(-1)
        if flat.numel() == 0 or bool((flat == flat[0]).all()):
            fill = Literal(flat[0].item() if flat.numel() else 0, scalar(from_torch(value.dtype)))
            return self.emit("broadcast_in_dim", fill, shape=tuple(value.shape), dims=())
        return self.weight(f"const.{self.node.name}", value.clone())

    def cast(self, x, dtype):
        if isinstance(x, Literal) or not _is_tensor(x):
            return self.lit(x.value if isinstance(x, Literal) else x, dtype)
        return x if x.type.dtype == dtype else self.emit("cast", x, dtype=dtype)

    def out_meta(self):
        return _meta(self.node)

    def out_type(self, i: Optional[int] = None) -> TensorType:
        m = self.out_meta()
        if i is not None:
            m = m[i]
        if not isinstance(m, torch.Tensor):
            raise Unsupported(f"{self.node.name}: no tensor metadata")
        return ir_type(m)

    def weight(self, name: str, value: torch.Tensor) -> Param:
        """The Param for a weight tensor (one Param per tensor, even when it is tied)."""
        key = id(value)
        if key in self._by_tensor:
            return self._by_tensor[key]
        base, k = name, 1
        while name in self.params:
            name, k = f"{base}_{k}", k + 1
        t = ir_type(value)
        p = Param(name, t)
        self.params[name] = p
        self.sources[name] = value
        v = value.detach()
        if v.dtype == torch.bfloat16:
            v = v.float()
        self.weights[name] = v.cpu().numpy() if v.dtype in _NUMPY_OK else v.float().cpu().numpy()
        self._by_tensor[key] = p
        return p

    # ---- the walk ----
    def run(self) -> Imported:
        env: dict[fx.Node, Any] = {}
        ph = iter(self.placeholders)
        input_map: list[Optional[int]] = []
        outputs: list[tuple[str, Any]] = []
        ir_outs: list = []
        for node in self.gm.graph.nodes:
            self.node = node
            if node.op == "placeholder":
                kind = next(ph)
                env[node], idx = self._placeholder(node, kind)
                input_map.append(idx)
            elif node.op == "get_attr":
                env[node] = self._get_attr(node)
            elif node.op in ("call_function", "call_method", "call_module"):
                args = fx.node.map_arg(node.args, env.__getitem__)
                kwargs = fx.node.map_arg(node.kwargs, env.__getitem__)
                env[node] = self.call(node, args, kwargs)
            elif node.op == "output":
                for v in _flat_outputs(fx.node.map_arg(node.args[0], env.__getitem__)):
                    if _is_tensor(v):
                        outputs.append(("ir", len(ir_outs)))
                        ir_outs.append(v)
                    else:
                        outputs.append(("const", v.value if isinstance(v, Literal) else v))
        self.node = None
        graph = Graph(tuple(self.inputs), tuple(self.eqns), tuple(ir_outs), tuple(self.params.values()), self.weights)
        report = Report()
        uses: dict[str, list[str]] = {}
        for c in self.opaque.values():
            uses.setdefault(c.name, []).append(c.where)
        for name, where in uses.items():
            reasons = sorted({c.reason for c in self.opaque.values() if c.name == name and c.reason})
            report.add("fx_import", name, kind="opaque", count=len(where), where=where, reason="; ".join(reasons))
        return Imported(graph, self.opaque, input_map, outputs, self.sources, report)

    def inline(self, gm: fx.GraphModule, args: Sequence[Any]):
        """Import the body of a higher-order op in place; returns its outputs."""
        env: dict[fx.Node, Any] = {}
        it = iter(args)
        saved = self.gm, self.node
        self.gm = gm
        try:
            for node in gm.graph.nodes:
                self.node = node
                if node.op == "placeholder":
                    env[node] = next(it)
                elif node.op == "get_attr":
                    env[node] = self._get_attr(node)
                elif node.op == "output":
                    return fx.node.map_arg(node.args[0], env.__getitem__)
                else:
                    node_args = fx.node.map_arg(node.args, env.__getitem__)
                    node_kwargs = fx.node.map_arg(node.kwargs, env.__getitem__)
                    env[node] = self.call(node, node_args, node_kwargs)
        finally:
            self.gm, self.node = saved

    def _placeholder(self, node, kind):
        if isinstance(kind, Weight):
            return self.weight(kind.name, kind.value), None
        if isinstance(kind, SymInput):
            return sym_dim(_meta(node)), None
        if isinstance(kind, Constant):
            return kind.value, None
        m = _meta(node)
        if not isinstance(m, torch.Tensor):
            raise FrontendError(f"input {node.name} is not a tensor ({type(m).__name__})")
        v = Var(ir_type(m))
        self.inputs.append(v)
        return v, len(self.inputs) - 1

    def _get_attr(self, node):
        obj = self.gm
        for part in node.target.split("."):
            obj = getattr(obj, part)
        if isinstance(obj, torch.Tensor):
            return self.weight(node.target, obj)
        return obj  # e.g. the sub-GraphModule of a higher-order op

    def call(self, node: fx.Node, args, kwargs):
        key = target_key(node)
        rule = self.rules.get(key)
        reason = f"no rule for {key}"
        if rule is not None:
            try:
                out = rule(self, *args, **kwargs)
                self._check(out)
                return out
            except Exception as e:  # any rule failure degrades to an opaque call, never a crash
                reason = f"{type(e).__name__}: {e}"
        value = _fold(node, args, kwargs)
        if value is not None:
            return self.constant(value)
        return self.opaque_call(node, args, kwargs, key, reason)

    def _check(self, out) -> None:
        """Compare a rule's result type with torch's metadata (catches mapping mistakes early)."""
        m = self.out_meta()
        if _is_tensor(out) and isinstance(m, torch.Tensor):
            want = ir_type(m)
            if out.type.shape != want.shape or out.type.dtype != want.dtype:
                raise FrontendError(f"{self.node.name}: rule produced {out.type}, torch says {want}")

    def opaque_call(self, node, args, kwargs, key, reason):
        tensors: list = []

        def slot(v):
            if _is_tensor(v):
                tensors.append(v)
                return Slot(len(tensors) - 1)
            if isinstance(v, Literal):
                return v.value
            return v

        targs = fx.node.map_aggregate(args, slot)
        tkwargs = fx.node.map_aggregate(kwargs, slot)
        m = self.out_meta()
        metas = [m] if isinstance(m, torch.Tensor) else list(m) if isinstance(m, (tuple, list)) else None
        if not metas or not all(isinstance(t, torch.Tensor) for t in metas):
            raise FrontendError(f"{node.name}: cannot keep {key} as an opaque call (its result is {type(m).__name__})")
        fn = node.target
        if node.op == "call_method":
            fn = _method(node.target)
        elif node.op == "call_module":
            fn = self.gm.get_submodule(node.target)
        out_types = tuple((str(t.dtype), tuple(t.shape)) for t in map(ir_type, metas))
        tag = f"{key}#{len(self.opaque)}"
        self.opaque[tag] = OpaqueCall(fn, targs, tkwargs, key, _where(node), reason, tuple(t.type for t in tensors))
        outs = self.emit("opaque", *tensors, target=tag, out_types=out_types)
        return outs if isinstance(m, (tuple, list)) else outs


def _fold(node: fx.Node, args, kwargs) -> Optional[torch.Tensor]:
    """The value of a tensor-creating call with no tensor or symbolic inputs, computed now.

    Only torch functions named like an ATen op that no RNG seeds (``linspace``, ``eye``,
    ``tril_indices``; not ``randn``) are folded: their value cannot change between calls.
    Returns None for any other call.
    """
    if node.op != "call_function" or not isinstance(_meta(node), torch.Tensor) or "generator" in kwargs:
        return None
    if not (getattr(node.target, "__module__", None) or "").startswith("torch"):
        return None
    packet = getattr(torch.ops.aten, getattr(node.target, "__name__", ""), None)
    if not isinstance(packet, torch._ops.OpOverloadPacket):
        return None
    if any(torch.Tag.nondeterministic_seeded in getattr(packet, o).tags for o in packet.overloads()):
        return None
    leaves: list = []
    fx.node.map_aggregate((args, kwargs), leaves.append)
    if any(_is_tensor(v) or isinstance(v, (D.Sym, torch.SymInt, torch.SymFloat, torch.SymBool)) for v in leaves):
        return None
    plain = fx.node.map_aggregate((args, kwargs), lambda v: v.value if isinstance(v, Literal) else v)
    try:
        with torch._subclasses.fake_tensor.unset_fake_temporarily():
            value = node.target(*plain[0], **plain[1])
    except Exception:
        return None
    return value if isinstance(value, torch.Tensor) else None


_NUMPY_OK = {
    torch.float32,
    torch.float64,
    torch.float16,
    torch.int64,
    torch.int32,
    torch.int16,
    torch.int8,
    torch.uint8,
    torch.bool,
}


def _method(name: str) -> Callable:
    return lambda self, *a, **k: getattr(self, name)(*a, **k)


def _flat_outputs(v) -> list:
    if isinstance(v, (tuple, list)):
        return [y for x in v for y in _flat_outputs(x)]
    return [v]


def _where(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack")
    if stack:
        path = list(stack.values())[-1][0]
        path = module_path(path)
        return f"{node.name} in {path}" if path else node.name
    return node.name


def target_key(node: fx.Node) -> str:
    """The rule-table key of a call: ``aten.<op>`` for ATen ops, else the function's name."""
    t = node.target
    if node.op == "call_method":
        return t
    if node.op == "call_module":
        return f"module.{type(node.graph.owning_module.get_submodule(t)).__name__}"
    if isinstance(t, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
        ns = t.namespace if hasattr(t, "namespace") else "aten"
        packet = t.overloadpacket if isinstance(t, torch._ops.OpOverload) else t
        return f"{ns}.{packet.__name__}"
    if isinstance(t, torch._ops.HigherOrderOperator):
        return f"higher_order.{t.name()}"
    mod = getattr(t, "__module__", None) or ""
    name = getattr(t, "__name__", str(t))
    if mod in ("_operator", "operator", "builtins") or mod.startswith("torch") or mod == "math":
        return name
    return f"{mod}.{name}"


# -- naming weights ---------------------------------------------------------------------------

_KEY = re.compile(r"\._(?:modules|parameters|buffers)\[['\"]([^'\"]+)['\"]\]|\.([A-Za-z0-9_]+)|\[(\d+)\]")


def module_path(source_name: str) -> str:
    """``L['self']._modules['layers']._modules['0']._parameters['weight']`` -> ``layers.0.weight``.

    A forward wrapped by a ``def wrapper(*args, **kwargs)`` decorator (transformers 5.24 wraps
    its models' ``forward`` so) sees the module as ``L['args'][0]``: that root is the module too."""
    s = re.sub(r"^(?:L\[['\"]args['\"]\]\[0\](?=\.)|[LG]\[['\"][^'\"]+['\"]\])", "", source_name, count=1)
    s = s if s[:1] in (".", "[") else "." + s
    parts = [a or b or c for a, b, c in _KEY.findall(s)]
    parts = [p for p in parts if p not in ("_modules", "_parameters", "_buffers")]
    return ".".join(parts) or source_name


def dynamo_placeholders(gm: fx.GraphModule, example_inputs: Sequence[Any]) -> list[Placeholder]:
    """Classify the placeholders of a graph Dynamo hands a backend."""
    out: list[Placeholder] = []
    nodes = [n for n in gm.graph.nodes if n.op == "placeholder"]
    for node, ex in zip(nodes, example_inputs):
        ga = node.meta.get("grapharg")
        src = getattr(ga, "source", None)
        sname = (
            src.name
            if src is not None and isinstance(getattr(src, "name", None), str)
            else (src.name() if src is not None else "")
        )
        if isinstance(ex, torch.SymInt) or isinstance(_meta(node), torch.SymInt):
            out.append(SymInput())
        elif isinstance(ex, torch.Tensor) and (
            isinstance(ex, torch.nn.Parameter) or "_parameters[" in sname or "_buffers[" in sname
        ):
            value = getattr(ga, "example", None) if ga is not None else None
            out.append(
                Weight(module_path(sname) if sname else node.name, value if isinstance(value, torch.Tensor) else ex)
            )
        elif isinstance(ex, torch.Tensor):
            out.append(UserInput())
        else:
            out.append(Constant(ex))
    return out


def import_dynamo(gm: fx.GraphModule, example_inputs: Sequence[Any]) -> Imported:
    """Import the FX graph a torch.compile backend receives (weights become named Params)."""
    return FxImporter(gm, dynamo_placeholders(gm, example_inputs)).run()


def import_exported(ep) -> Imported:
    """Import a :class:`torch.export.ExportedProgram` (ATen graph; weights from its signature)."""
    from torch.export.graph_signature import InputKind

    kinds: list[Placeholder] = []
    for spec in ep.graph_signature.input_specs:
        if spec.kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR):
            value = ep.state_dict.get(spec.target) if spec.target in ep.state_dict else ep.constants[spec.target]
            kinds.append(Weight(spec.target, value))
        elif isinstance(spec.arg, torch.export.graph_signature.TensorArgument):
            kinds.append(UserInput())
        elif isinstance(spec.arg, torch.export.graph_signature.SymIntArgument):
            kinds.append(SymInput())
        else:
            kinds.append(Constant(getattr(spec.arg, "value", None)))
    return FxImporter(ep.graph_module, kinds).run()
