"""pared's framework-neutral IR: types, values, equations, graphs, the op registry, text form."""

from . import dims, dtypes, ops  # noqa: F401  (ops registers the core op set)
from .build import GraphBuilder, literal, make_eqn
from .core import Atom, Attrs, Eqn, Graph, Literal, Param, Var
from .dims import Sym
from .dtypes import DType
from .errors import AttrError, IRError, ParseError, TypeInferenceError, UnknownOpError, VerifyError
from .opdef import OPS, AttrSpec, Cost, OpDef, attr, eqn_cost, get_op, register
from .printer import format_eqn, format_type, print_graph
from .types import Quant, Sparse, SparseQuant, TensorType, scalar, tensor

sym = Sym.name

__all__ = [
    "Atom", "AttrError", "AttrSpec", "Attrs", "Cost", "DType", "Eqn", "Graph", "GraphBuilder",
    "IRError", "Literal", "OPS", "OpDef", "Param", "ParseError", "Quant", "Sparse", "SparseQuant",
    "Sym", "TensorType", "TypeInferenceError", "UnknownOpError", "Var", "VerifyError", "attr",
    "eqn_cost", "format_eqn", "format_type", "get_op", "literal", "make_eqn", "print_graph",
    "register", "scalar", "sym", "tensor",
]

from .equality import assert_graph_equal, graph_diff, graph_equal  # noqa: E402
from .parser import parse  # noqa: E402

__all__ += ["assert_graph_equal", "graph_diff", "graph_equal", "parse"]

from .verify import check_encoding, verify  # noqa: E402

__all__ += ["check_encoding", "verify"]
