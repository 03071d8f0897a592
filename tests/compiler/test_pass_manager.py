"""The pass manager and its instruments: dumps, timing, verify, numerics, error context."""

import numpy as np
import pytest

from pared.compiler import (
    DumpIR,
    Instrument,
    NumericsCheck,
    NumericsError,
    PassError,
    PassManager,
    Timing,
    run_pipeline,
)
from pared.ir import GraphBuilder, VerifyError, parse, print_graph
from pared.passes import PassContext

from . import pm_test_passes  # noqa: F401  (registers the t_* passes)


def model():
    """x @ W^T * 1 + b, with a duplicate and dead code: cleanup has work to do."""
    rng = np.random.default_rng(0)
    b = GraphBuilder()
    x = b.input([2, 3])
    w = b.param("fc.weight", rng.standard_normal((4, 3)).astype(np.float32))
    bias = b.param("fc.bias", rng.standard_normal((4,)).astype(np.float32))
    wt = b.transpose(w, perm=(1, 0))
    y = b.dot_general(x, wt, contract=((1,), (0,)))
    y = b.mul(y, 1.0)
    y1 = b.add(y, bias)
    y2 = b.add(y, bias)
    b.exp(y1)  # dead
    return b.build(b.mul(y1, y2))


X = [np.random.default_rng(1).standard_normal((2, 3)).astype(np.float32)]


def test_runs_cleanup_and_keeps_the_input():
    g = model()
    text = print_graph(g)
    out = PassManager("cleanup").run(g)
    assert print_graph(g) == text
    assert [e.op for e in out.eqns] == ["dot_general", "add", "mul"]
    assert [p.name for p in out.params] == ["fc.weight", "fc.bias"]


def test_dump_files_are_numbered_and_parse(tmp_path):
    pm = PassManager("canonicalize,cse,dce", dump_ir=tmp_path / "dump")
    pm.run(model())
    files = sorted(p.name for p in (tmp_path / "dump").iterdir())
    assert files == ["000_input.ir", "001_canonicalize.ir", "002_cse.ir", "003_dce.ir"]
    last = parse((tmp_path / "dump" / "003_dce.ir").read_text())
    assert len(last.eqns) == 3
    assert pm.instrument(DumpIR).files[-1].name == "003_dce.ir"


def test_dump_dir_from_environment_is_read_at_construction(tmp_path, monkeypatch):
    monkeypatch.setenv("PARED_DUMP_IR", str(tmp_path / "env"))
    pm = PassManager("dce")
    monkeypatch.delenv("PARED_DUMP_IR")
    pm.run(model())
    assert sorted(p.name for p in (tmp_path / "env").iterdir()) == ["000_input.ir", "001_dce.ir"]
    # set after construction: no effect; dump_ir=False overrides the variable
    pm2 = PassManager("dce")
    monkeypatch.setenv("PARED_DUMP_IR", str(tmp_path / "late"))
    pm2.run(model())
    PassManager("dce", dump_ir=False).run(model())
    assert not (tmp_path / "late").exists()


def test_timing_per_pass_and_summary():
    pm = PassManager("cleanup")
    pm.run(model())
    t = pm.timing
    assert isinstance(t, Timing)
    assert [n for n, _ in t.records] == ["canonicalize", "fold", "cse", "dce"]
    assert all(s >= 0 for _, s in t.records) and t.total >= 0
    summary = t.summary()
    for name in ("canonicalize", "fold", "cse", "dce", "total"):
        assert name in summary
    assert PassManager("dce", timing=False).timing is None


def test_verify_catches_a_broken_pass():
    with pytest.raises(PassError) as info:
        PassManager("canonicalize,t_break_ssa,dce").run(model())
    e = info.value
    assert e.pass_name == "t_break_ssa"
    assert e.completed == ("canonicalize",)
    assert isinstance(e.cause, VerifyError) and isinstance(e.__cause__, VerifyError)
    assert "t_break_ssa" in str(e) and "passes run before it: canonicalize" in str(e)
    # without verification the broken graph goes through
    PassManager("t_break_ssa", verify=False).run(model())


def test_verify_catches_a_type_that_disagrees_with_the_op_rule():
    with pytest.raises(PassError, match="t_retype") as info:
        PassManager("cse,dce,t_retype").run(model())
    assert info.value.completed == ("cse", "dce")


def test_invalid_input_is_reported_before_any_pass():
    bad = pm_test_passes.BreakSSA().run(model(), PassContext())
    ctx = PassContext()
    with pytest.raises(VerifyError, match="before any pass"):
        PassManager("t_record").run(bad, ctx)
    assert len(ctx.report) == 0


def test_numerics_catches_a_wrong_pass():
    ctx = PassContext(sample_inputs=X)
    pm = PassManager("canonicalize,cse,t_add_to_sub,dce", numerics=True)
    with pytest.raises(NumericsError) as info:
        pm.run(model(), ctx)
    e = info.value
    assert isinstance(e, PassError)
    assert e.pass_name == "t_add_to_sub" and e.completed == ("canonicalize", "cse")
    assert e.output_index == 0 and e.max_abs > 0
    assert "output 0 drifted" in str(e) and "t_add_to_sub" in str(e)
    records = pm.numerics.records
    assert [r.pass_name for r in records] == ["canonicalize", "cse"]
    assert all(r.max_abs <= 1e-5 for r in records)


def test_numerics_records_errors_and_skips():
    g = model()
    chk = NumericsCheck(rtol=1e-5, atol=1e-6)
    run_pipeline(g, "cleanup", PassContext(sample_inputs=X), numerics=chk)
    assert [r.pass_name for r in chk.records] == ["canonicalize", "fold", "cse", "dce"]
    assert not any(r.skipped for r in chk.records)
    assert "max abs" in chk.table()
    # no sample inputs, or a graph without weights: recorded as skipped, no error
    run_pipeline(g, "dce", numerics=chk)
    assert "no sample inputs" in chk.records[0].skipped
    run_pipeline(parse(print_graph(g)), "dce", PassContext(sample_inputs=X), numerics=chk)
    assert "has no value" in chk.records[0].skipped


def test_numerics_tolerance_per_pass():
    chk = NumericsCheck(tolerances={"t_add_to_sub": (1e9, 1e9)})
    run_pipeline(model(), "t_add_to_sub", PassContext(sample_inputs=X), numerics=chk)
    assert chk.records[0].max_abs > 0


def test_pass_error_names_pass_predecessors_and_equation():
    with pytest.raises(PassError) as info:
        PassManager("canonicalize,fold,t_crash").run(model())
    e = info.value
    assert e.pass_name == "t_crash" and e.completed == ("canonicalize", "fold") and e.index == 2
    assert e.eqn is not None and e.eqn.op == "dot_general"
    text = str(e)
    assert "pass 't_crash' (pass 3 of the pipeline) failed" in text
    assert "passes run before it: canonicalize, fold" in text
    assert "dot_general(" in text


def test_first_pass_failing_and_non_graph_results():
    with pytest.raises(PassError, match="none \\(it ran first\\)"):
        PassManager("t_crash").run(model())
    with pytest.raises(PassError, match="returned list, not a Graph"):
        PassManager("dce,t_not_a_graph").run(model())


def test_custom_instruments_hook_order():
    calls = []

    class Spy(Instrument):
        def __init__(self, tag):
            self.tag = tag

        def before_pipeline(self, graph, ctx, passes):
            calls.append((self.tag, "start", len(passes)))

        def before_pass(self, index, pass_, graph, ctx):
            calls.append((self.tag, "before", pass_.name))

        def after_pass(self, index, pass_, graph, ctx):
            calls.append((self.tag, "after", pass_.name))

        def after_pipeline(self, graph, ctx):
            calls.append((self.tag, "end"))

    PassManager("dce", instruments=[Spy("a"), Spy("b")], verify=False, timing=False).run(model())
    assert calls == [
        ("a", "start", 1), ("b", "start", 1),
        ("a", "before", "dce"), ("b", "before", "dce"),
        ("b", "after", "dce"), ("a", "after", "dce"),
        ("a", "end"), ("b", "end"),
    ]


def test_report_rows_from_passes():
    ctx = PassContext()
    run_pipeline(model(), "t_options{n=2,ratio=0.25},t_record", ctx)
    assert ctx.report.to_dicts() == [
        {"pass": "t_options", "name": "graph", "n": 2, "ratio": 0.25},
        {"pass": "t_record", "name": "graph", "eqns": 7},
    ]
    table = ctx.report.table()
    assert "t_options" in table and "ratio" in table and "eqns" in table


def test_cleanup_on_a_large_graph_is_fast():
    """25,000 equations: every pass is one linear sweep (or a few)."""
    import time

    b = GraphBuilder()
    x = b.input([8])
    w = b.param("w", np.ones(8, np.float32))
    v = x
    for _ in range(5000):
        a = b.add(v, w)
        a2 = b.add(w, v)  # duplicate (commuted)
        b.neg(a)  # dead
        v = b.mul(b.mul(a, a2), 1.0)
    g = b.build(v)
    t0 = time.perf_counter()
    out = PassManager("cleanup", verify=False).run(g)  # the passes alone, not verify's cost
    assert time.perf_counter() - t0 < 5
    assert len(out.eqns) == 10000
