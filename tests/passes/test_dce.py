import numpy as np

from pared.ir import GraphBuilder, parse
from pared.passes import DCE

from .golden import check_golden


def test_drops_unused_pure_eqns_and_chains():
    check_golden(
        DCE(),
        """graph(%0:f32[2,3]) {
          %1:f32[2,3] = neg(%0)
          %2:f32[2,3] = exp(%1)
          %3:f32[2,3] = add(%0, %0)
          return %3
        }""",
        """graph(%0:f32[2,3]) {
          %1:f32[2,3] = add(%0, %0)
          return %1
        }""",
    )


def test_keeps_impure_ops():
    check_golden(
        DCE(),
        """graph(%0:f32[2]) {
          %1:f32[2] = opaque(%0) {out_types=((f32,(2,)),), target="print"}
          %2:f32[2] = neg(%0)
          return %0
        }""",
        """graph(%0:f32[2]) {
          %1:f32[2] = opaque(%0) {out_types=((f32,(2,)),), target="print"}
          return %0
        }""",
    )


def test_drops_unused_params_and_weights():
    b = GraphBuilder()
    x = b.input([2, 3])
    w = b.param("w", np.ones((3, 3), np.float32))
    b.param("unused", np.zeros((4,), np.float32))
    dead = b.mul(w, 2.0)  # noqa: F841 - dead code reading w
    y = b.add(x, 1.0)
    g = b.build(y)
    out = DCE().run(g, None)
    assert [p.name for p in out.params] == []
    assert dict(out.weights) == {}
    assert [e.op for e in out.eqns] == ["add"]
    kept = DCE(keep_params=True).run(g, None)
    assert {p.name for p in kept.params} == {"w", "unused"}
    del w


def test_param_returned_as_output_is_kept():
    g = parse("""graph(%0:f32[2]) {
      param @w:f32[2]
      param @v:f32[2]
      return @w
    }""")
    out = DCE().run(g, None)
    assert [p.name for p in out.params] == ["w"]


def test_inside_regions():
    check_golden(
        DCE(),
        """graph(%0:f32[2,3]) {
          param @b:f32[2,3]
          param @c:f32[2,3]
          %1:f32[2,3] = fused(%0) {kind="k"} region(%2:f32[2,3]) {
            %3:f32[2,3] = neg(%2)
            %4:f32[2,3] = add(%2, @b)
            %5:f32[2,3] = mul(@c, @c)
            return %4
          }
          return %1
        }""",
        """graph(%0:f32[2,3]) {
          param @b:f32[2,3]
          %1:f32[2,3] = fused(%0) {kind="k"} region(%2:f32[2,3]) {
            %4:f32[2,3] = add(%2, @b)
            return %4
          }
          return %1
        }""",
    )


def test_unchanged_graph_is_returned_as_is():
    g = parse("""graph(%0:f32[2]) {
      %1:f32[2] = neg(%0)
      return %1
    }""")
    assert DCE().run(g, None) is g
