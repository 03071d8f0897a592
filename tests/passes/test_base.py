"""Pass base class, registry, option coercion, context and report."""

from dataclasses import dataclass
from typing import Literal, Optional

import pytest

from pared.ir import parse
from pared.passes import (
    DCE,
    Pass,
    PassContext,
    PassOptionError,
    Report,
    available_passes,
    coerce_option,
    get_pass,
    register_pass,
)


def test_registry():
    assert {"canonicalize", "fold", "cse", "dce"} <= set(available_passes())
    assert get_pass("dce") is DCE and DCE.name == "dce"
    with pytest.raises(KeyError, match="did you mean 'dce'.*available: .*canonicalize"):
        get_pass("dcee")


def test_register_pass_checks_the_class():
    class NotFrozen(Pass):
        def run(self, graph, ctx):
            return graph

    with pytest.raises(TypeError, match="dataclass\\(frozen=True\\)"):
        register_pass("t_not_frozen")(dataclass(NotFrozen))
    with pytest.raises(TypeError, match="not a Pass subclass"):
        register_pass("t_not_a_pass")(dataclass(frozen=True)(type("X", (), {})))

    @dataclass(frozen=True)
    class Other(Pass):
        def run(self, graph, ctx):
            return graph

    with pytest.raises(ValueError, match="already registered"):
        register_pass("dce")(Other)


def test_passes_are_frozen_values_and_callable():
    g = parse("""graph(%0:f32[2]) {
      %1:f32[2] = neg(%0)
      return %0
    }""")
    p = DCE()
    with pytest.raises(AttributeError):
        p.keep_params = True  # type: ignore[misc]
    assert DCE() == DCE() and hash(DCE()) == hash(DCE()) and DCE() != DCE(keep_params=True)
    assert len(p(g).eqns) == 0 and len(g.eqns) == 1
    assert DCE.option_types() == {"keep_params": bool}
    assert DCE(keep_params=True).options_text() == "dce{keep_params=true}"
    with pytest.raises(PassOptionError, match="no option 'keep'.*did you mean 'keep_params'"):
        DCE.from_options({"keep": True})


@pytest.mark.parametrize(
    "tp, value, want",
    [
        (int, "12", 12),
        (int, 3.0, 3),
        (float, "1e-3", 1e-3),
        (float, 2, 2.0),
        (bool, "On", True),
        (bool, "0", False),
        (str, "2:4", "2:4"),
        (str, "'a b'", "a b"),
        (Optional[int], "None", None),
        (Optional[int], 5, 5),
        (Literal["a", "b"], "b", "b"),
        (Literal[2, 4], "4", 4),
        (tuple[int, ...], "(1, 2,)", (1, 2)),
        (tuple[int, ...], [3], (3,)),
        (tuple[int, ...], "2:4", (2, 4)),
        (tuple[int, str], "(1,x)", (1, "x")),
        (tuple[float, ...], "[]", ()),
    ],
)
def test_coerce_option(tp, value, want):
    got = coerce_option(tp, value)
    assert got == want and type(got) is type(want)


@pytest.mark.parametrize(
    "tp, value",
    [
        (int, "1.5"),
        (int, True),
        (float, "x"),
        (bool, 1),
        (str, None),
        (Literal["a"], "c"),
        (tuple[int, int], "(1,2,3)"),
    ],
)
def test_coerce_option_rejects(tp, value):
    with pytest.raises(PassOptionError, match="expected"):
        coerce_option(tp, value, "p.opt")


def test_report_rows_table_and_dicts():
    r = Report()
    assert r.table() == "(empty report)"
    r.add("sparsify", "fc1.weight", method="wanda", sparsity=0.5)
    r.add("quantize", "fc1.weight", bits=4, error=0.0123456)
    assert len(r) == 2 and r.rows[0].fields["method"] == "wanda"
    assert r.to_dicts()[1] == {"pass": "quantize", "name": "fc1.weight", "bits": 4, "error": 0.0123456}
    assert [row.pass_name for row in r.for_pass("quantize")] == ["quantize"]
    lines = r.table().splitlines()
    assert lines[0].split() == ["pass", "name", "method", "sparsity", "bits", "error"]
    assert "0.01235" in lines[3]


def test_contexts_do_not_share_state():
    a, b = PassContext(), PassContext(backend="torch", device="cpu", opaque={"x": 1})
    a.report.add("p", "n")
    assert len(b.report) == 0 and a.opaque == {} and b.backend == "torch"
