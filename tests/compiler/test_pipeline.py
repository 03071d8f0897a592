"""Pipeline parsing: strings, lists, mappings, YAML; every error fails before any pass runs."""

import sys

import pytest

from pared.compiler import (
    PRESETS,
    PassManager,
    PipelineError,
    format_pipeline,
    parse_pipeline,
    parse_yaml,
    run_pipeline,
)
from pared.ir import parse
from pared.passes import CSE, DCE, Canonicalize, Fold, PassContext, available_passes

from . import pm_test_passes

G = parse("""graph(%0:f32[2]) {
  %1:f32[2] = neg(%0)
  return %1
}""")


def names(passes):
    return [p.name for p in passes]


def test_string_with_options_and_preset():
    ps = parse_pipeline("t_options{n=3,ratio=0.25,flag=true,pattern=2:4,method=wanda,group=128,dims=(1,2)}, cleanup")
    o = ps[0]
    assert (o.n, o.ratio, o.flag, o.pattern, o.method, o.group, o.dims) == (3, 0.25, True, "2:4", "wanda", 128, (1, 2))
    assert names(ps[1:]) == ["canonicalize", "fold", "cse", "dce"]
    assert PRESETS["cleanup"] == "canonicalize,fold,cse,dce"


def test_option_value_forms():
    (o,) = parse_pipeline('t_options{pattern="a,b}c", group=none, dims=[3], flag=0, ratio=1}')
    assert (o.pattern, o.group, o.dims, o.flag, o.ratio) == ("a,b}c", None, (3,), False, 1.0)
    assert parse_pipeline("t_options{}") == [pm_test_passes.OptionsPass()]
    assert parse_pipeline("") == []
    assert parse_pipeline("  dce ,  cse  ") == [DCE(), CSE()]


def test_lists_mappings_and_instances():
    spec = [
        {"t_options": {"ratio": 0.5, "dims": [1, 2], "pattern": "2:4"}},
        "dce",
        {"fold": None},
        CSE(),
        "canonicalize,cse",
    ]
    ps = parse_pipeline(spec)
    assert names(ps) == ["t_options", "dce", "fold", "cse", "canonicalize", "cse"]
    assert ps[0].dims == (1, 2)
    assert parse_pipeline({"passes": ["dce"], "name": "x"}) == [DCE()]
    assert parse_pipeline({"passes": "fold{allow_growth=true}"}) == [Fold(allow_growth=True)]
    assert parse_pipeline(Canonicalize()) == [Canonicalize()]
    assert parse_pipeline(DCE) == [DCE()]


YAML = """
name: test recipe
passes:
  - t_options:
      ratio: 0.5
      pattern: 2:4
      n: "7"
      dims: [1, 2]
      group: null
  - dce
  - fold: {allow_growth: yes}
  - cleanup
"""


def test_yaml_string_and_file(tmp_path):
    ps = parse_yaml(YAML)
    assert names(ps) == ["t_options", "dce", "fold", "canonicalize", "fold", "cse", "dce"]
    assert ps[0].pattern == "2:4"  # not YAML 1.1's base-60 integer 124
    assert (ps[0].n, ps[0].dims, ps[0].group) == (7, (1, 2), None)
    assert ps[2].allow_growth is True
    f = tmp_path / "recipe.yaml"
    f.write_text(YAML)
    assert parse_pipeline(str(f)) == ps
    assert parse_pipeline(f) == ps
    assert parse_pipeline(YAML) == ps
    assert parse_pipeline("- dce\n- cse\n") == [DCE(), CSE()]
    assert parse_yaml("t_options{ratio=1e-3}")[0].ratio == 1e-3


def test_format_round_trip():
    ps = parse_pipeline("t_options{n=3,pattern=2:4,dims=(1,2)},dce,fold{allow_growth=true}")
    text = format_pipeline(ps)
    assert text == "t_options{n=3,pattern=2:4,dims=(1,2)},dce,fold{allow_growth=true}"
    assert parse_pipeline(text) == ps


# --- errors: each fails before anything runs, naming what is valid -------------------------------


def _fails_before_running(spec, *match):
    """The spec is rejected by parse_pipeline, PassManager and run_pipeline; nothing ran."""
    for attempt in (lambda: parse_pipeline(spec), lambda: PassManager(spec)):
        with pytest.raises(PipelineError) as info:
            attempt()
        for m in match:
            assert m in str(info.value), f"{m!r} not in {info.value}"
    ctx = PassContext()
    full = ["t_record", spec] if not isinstance(spec, (dict, str)) or isinstance(spec, dict) else "t_record," + spec
    if isinstance(spec, dict):
        full = ["t_record", spec]
    with pytest.raises(PipelineError):
        run_pipeline(G, full, ctx)
    assert len(ctx.report) == 0, "a pass ran before the pipeline error"
    return info.value


def test_unknown_pass_lists_valid_names_and_suggests():
    e = _fails_before_running("dce,cannonicalize", "unknown pass 'cannonicalize'", "did you mean 'canonicalize'")
    for n in available_passes():
        assert n in str(e)
    assert "cleanup" in str(e)
    _fails_before_running({"nope": {}}, "unknown pass 'nope'", "available passes")


def test_unknown_option_lists_valid_options():
    _fails_before_running(
        "t_options{ration=0.5}", "no option 'ration'", "did you mean 'ratio'", "valid options: n, ratio, flag"
    )
    _fails_before_running("dce{keep=1}", "no option 'keep'", "keep_params")
    _fails_before_running({"fold": {"allow_grow": True}}, "allow_growth")


@pytest.mark.parametrize(
    "spec, match",
    [
        ("t_options{n=abc}", "expected int"),
        ("t_options{n=1.5}", "expected int"),
        ("t_options{ratio=half}", "expected float"),
        ("t_options{flag=maybe}", "expected bool"),
        ("t_options{method=sparsegpt}", "one of 'magnitude', 'wanda'"),
        ("t_options{group=big}", "int or none"),
        ("t_options{dims=(1,x)}", "tuple of int"),
        ("t_options{ratio=2}", "ratio must be in [0, 1]"),
        ({"t_options": {"flag": "yes please"}}, "expected bool"),
        ({"t_options": {"n": True}}, "expected int"),
        ({"t_options": {"pattern": [2, 4]}}, "expected str"),
    ],
)
def test_bad_values(spec, match):
    _fails_before_running(spec, match, "t_options")


@pytest.mark.parametrize(
    "spec, match",
    [
        ("dce,", "expected a pass name"),
        (",dce", "expected a pass name"),
        ("dce cse", "expected ',' between passes"),
        ("dce{keep_params}", "expected '='"),
        ("dce{keep_params=true", "expected ',' or '}'"),
        ("dce{keep_params=}", "empty value"),
        ('t_options{pattern="2:4}', "unterminated quote"),
        ("t_options{dims=(1,2}", "unclosed bracket"),
        ("dce{keep_params=true,keep_params=false}", "given twice"),
        ("cleanup{x=1}", "takes no options"),
        ("3dce", "expected a pass name"),
    ],
)
def test_malformed_strings(spec, match):
    _fails_before_running(spec, match, "malformed" if "takes no options" not in match and "twice" not in match else "")


@pytest.mark.parametrize(
    "spec, match",
    [
        ({"passes": ["dce"], "extra": 1}, "unknown recipe key 'extra'"),
        ({"pases": ["dce"]}, "did you mean 'passes'"),
        ({"name": "x"}, "needs a 'passes' list"),
        ([{"dce": {}, "cse": {}}], "exactly one pass"),
        ([42], "expected a pass name"),
        ([{"dce": [1]}], "expected {pass name"),
    ],
)
def test_bad_structures(spec, match):
    with pytest.raises(PipelineError, match=match.replace("{", r"\{").replace("(", r"\(")):
        parse_pipeline(spec)


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(PipelineError, match="malformed YAML"):
        parse_yaml("passes: [dce\n")
    with pytest.raises(PipelineError, match="not found"):
        parse_pipeline(str(tmp_path / "missing.yaml"))
    with pytest.raises(PipelineError, match="a list of passes"):
        parse_yaml("42")


def test_missing_pyyaml_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "yaml", None)
    with pytest.raises(PipelineError, match="pip install pyyaml"):
        parse_yaml("- dce")
