"""The calibrated-quantizer base: a new method is a ``solve`` and its options."""

from dataclasses import dataclass
from typing import ClassVar, Optional

import numpy as np
import pytest

from pared.compiler.context import make_context
from pared.ir import verify
from pared.passes.quantize import FP8, W8A8, CalibratedWeightQuantizer, QuantizeWeights, Solution, weight_grid
from pared.passes.quantize.calibrated import reconstruction_error
from pared.passes.quantize.grid import rtn_quantize
from pared.passes.quantize.scheme import QuantizationError, Ragged, SchemeKind, dequantize_with, quantize_with

from .conftest import calibration, mlp_graph


@dataclass(frozen=True)
class HessianClip(CalibratedWeightQuantizer):
    """The module docstring's example: RTN with each group's clipping picked by its diag(H)-weighted error."""

    name: ClassVar[str] = "hclip"  # not registered: the registry stays as the package defines it

    weights: str = "int4"
    group: Optional[int] = 32
    scheme: SchemeKind = "auto"
    ragged: Ragged = "allow"
    ignore: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()

    def solve(self, w, stats):
        scheme = self.weight_scheme()
        scale, zero = weight_grid(w, scheme, "mse", importance=np.diag(stats.hessian))
        return quantize_with(w, scale, zero, scheme), scale, zero


def ctx_with(cal=None):
    return make_context(calibration=cal, progress=False)


def test_a_solve_is_a_whole_pass(rng):
    g = mlp_graph(rng)
    ctx = ctx_with(calibration(rng))
    out = HessianClip(weights="uint4", ignore=("down",))(g, ctx)
    verify(out)
    assert [e.op for e in out.eqns].count("qlinear") == 4 and "down.weight" in out.weights
    rows = {r.name: r.fields for r in ctx.report.for_pass("hclip")}
    assert rows["down.weight"]["skipped"] == "matched ignore=; kept in float"
    assert all(rows[n]["bits"] == 4 and rows[n]["group"] == 32 and rows[n]["bytes_after"] < rows[n]["bytes_before"]
               for n in ("q.weight", "k.weight", "up.weight", "gate.weight"))
    # the first layer saw the float model's input: its codes are the method's on the original weight
    w = np.asarray(g.weight("q.weight"))
    q = out.weights["q.weight.q"]
    s = HessianClip(weights="uint4").weight_scheme()
    assert q.dtype == s.dtype.storage and q.min() >= s.qmin and q.max() <= s.qmax
    rq, rs, _ = rtn_quantize(w, s)
    assert (out.weights["q.weight.scale"] <= rs).all()  # mse clipping only shrinks the min/max range


def test_bad_options_fail_at_construction_and_ragged_is_read():
    with pytest.raises(QuantizationError, match="unsupported bit-width"):
        HessianClip(weights="int9")
    g = mlp_graph(np.random.default_rng(0), k=72)
    ctx = ctx_with(calibration(np.random.default_rng(1), k=72))
    HessianClip(ragged="skip")(g, ctx)
    skipped = {r.name for r in ctx.report.for_pass("hclip") if "skipped" in r.fields}
    assert skipped == {"q.weight", "k.weight", "up.weight", "gate.weight"}


@dataclass(frozen=True)
class Recorder(CalibratedWeightQuantizer):
    """Asks for more statistics, returns a Solution with its own report fields and dequantized weight."""

    name: ClassVar[str] = "recorder"

    weights: str = "int8"
    group: Optional[int] = None
    scheme: SchemeKind = "sym"
    ignore: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()

    def statistics(self):
        return ("hessian", "absmax")

    def solve(self, w, stats):
        scheme = self.weight_scheme()
        q, scale, zero = rtn_quantize(w, scheme)
        dq = dequantize_with(q, scale, zero, scheme)
        return Solution(q, scale, zero, dequantized=dq,
                        info={"shape": w.shape, "dtype": str(w.dtype), "absmax": float(stats.absmax.max()),
                              "recon_err": reconstruction_error(w, dq, stats.hessian), "tokens": int(stats.count)})


def test_solution_fields_reach_the_report_and_the_engine_goes_on_with_dequantized_weights(rng):
    g = mlp_graph(rng)
    cal = calibration(rng)
    ctx = ctx_with(cal)
    out = Recorder()(g, ctx)
    verify(out)
    rows = {r.name: r.fields for r in ctx.report.for_pass("recorder")}
    assert rows["up.weight"]["shape"] == (128, 64) and rows["down.weight"]["shape"] == (64, 128)
    assert {f["dtype"] for f in rows.values()} == {"float32"} and all(f["tokens"] == 128 for f in rows.values())
    assert all(0 < f["recon_err"] < 1e-3 and f["absmax"] > 0 for f in rows.values())
    assert "rel_err" not in rows["q.weight"]  # rel_err is RTN's row, from its dequantized weight
    assert "rel_err" in next(r.fields for r in _rtn_rows(g))


def _rtn_rows(g):
    ctx = ctx_with()
    QuantizeWeights()(g, ctx)
    return ctx.report.for_pass("quantize")


@pytest.mark.parametrize("activations", ["dynamic", "static", "none"])
def test_fp8_reports_under_its_own_name(rng, activations):
    ctx = ctx_with(calibration(rng))
    out = FP8(activations=activations)(mlp_graph(rng), ctx)
    verify(out)
    rows = ctx.report.for_pass("fp8")
    assert len(rows) == 5 and not ctx.report.for_pass("w8a8")
    assert all(("act_obs" in r.fields) == (activations != "none") for r in rows)
    assert all(("act_scale" in r.fields) == (activations == "static") for r in rows)
    assert W8A8(weights="fp8").weight_scheme() == FP8().weight_scheme()
