import numpy as np
import pytest

from pared.backends.reference.interpreter import run_graph
from pared.ir import GraphBuilder, parse
from pared.passes import Fold

from .golden import check_golden

W = np.arange(6, dtype=np.float32).reshape(2, 3)


def test_transpose_of_param_becomes_new_param():
    out = check_golden(
        Fold(),
        """graph(%0:f32[4,3]) {
          param @fc.weight:f32[2,3]
          %1:f32[3,2] = transpose(@fc.weight) {perm=(1,0)}
          %2:f32[4,2] = dot_general(%0, %1) {contract=((1,),(0,))}
          return %2
        }""",
        """graph(%0:f32[4,3]) {
          param @fc.weight:f32[2,3]
          param @fc.weight.transpose:f32[3,2]
          %2:f32[4,2] = dot_general(%0, @fc.weight.transpose) {contract=((1,),(0,))}
          return %2
        }""",
        weights={"fc.weight": W},
    )
    np.testing.assert_array_equal(out.weights["fc.weight.transpose"], W.T)


def test_chains_fold_and_names_are_unique():
    out = check_golden(
        Fold(),
        """graph(%0:f32[2,3]) {
          param @w:f32[2,3]
          param @w.neg:f32[2,3]
          %1:f32[2,3] = neg(@w)
          %2:f32[2,3] = mul(%1, 2.0:f32[])
          %3:f32[2,3] = add(%0, %2)
          return %3, @w.neg
        }""",
        """graph(%0:f32[2,3]) {
          param @w:f32[2,3]
          param @w.neg:f32[2,3]
          param @w.neg.1:f32[2,3]
          param @w.neg.1.mul:f32[2,3]
          %3:f32[2,3] = add(%0, @w.neg.1.mul)
          return %3, @w.neg
        }""",
        weights={"w": W, "w.neg": W},
    )
    np.testing.assert_array_equal(out.weights["w.neg.1.mul"], -2 * W)


def test_scalar_results_become_literals():
    check_golden(
        Fold(),
        """graph(%0:f32[2,3]) {
          param @s:f32[3]
          %1:f32[] = reduce_sum(@s) {axes=(0,)}
          %2:f32[] = mul(%1, 2.0:f32[])
          %3:f32[] = add(3.0:f32[], 4.0:f32[])
          %4:f32[2,3] = mul(%0, %2)
          %5:f32[2,3] = add(%4, %3)
          return %5
        }""",
        """graph(%0:f32[2,3]) {
          param @s:f32[3]
          %4:f32[2,3] = mul(%0, 12.0:f32[])
          %5:f32[2,3] = add(%4, 7.0:f32[])
          return %5
        }""",
        weights={"s": np.array([1.0, 2.0, 3.0], np.float32)},
    )


GROWING = """graph(%0:f32[4,8]) {
  %1:f32[4,8] = broadcast_in_dim(1.5:f32[]) {shape=(4,8), dims=()}
  %2:i32[4,8] = iota() {shape=(4,8), axis=1, dtype=i32}
  %3:f32[4,8] = cast(%2) {dtype=f32}
  %4:f32[4,8] = add(%0, %1)
  %5:f32[4,8] = add(%4, %3)
  return %5
}"""


def test_does_not_grow_unless_asked():
    g = parse(GROWING)
    assert Fold().run(g, None) is g
    out = Fold(allow_growth=True).run(g, None)
    assert [e.op for e in out.eqns] == ["add", "add"]
    x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    np.testing.assert_allclose(run_graph(out, [x])[0], run_graph(g, [x])[0])


def test_missing_weights_are_skipped_without_error():
    g = parse("""graph(%0:f32[3,2]) {
      param @w:f32[2,3]
      %1:f32[3,2] = transpose(@w) {perm=(1,0)}
      %2:f32[3,2] = add(%0, %1)
      return %2
    }""")
    assert Fold().run(g, None) is g


def test_impure_and_region_ops_are_not_folded():
    g = parse("""graph(%0:f32[2]) {
      param @w:f32[2]
      %1:f32[2] = opaque(@w) {out_types=((f32,(2,)),), target="t"}
      %2:f32[2] = fused(@w) {kind="k"} region(%3:f32[2]) {
        %4:f32[2] = neg(%3)
        return %4
      }
      %5:f32[2] = add(%1, %2)
      return %5
    }""").with_weights({"w": np.ones(2, np.float32)})
    out = Fold().run(g, None)
    assert [e.op for e in out.eqns] == ["opaque", "fused", "add"]
    # the region body is folded: its neg reads a region input, not a constant, so nothing changes
    assert out is g


def test_folds_inside_region_bodies():
    g = parse("""graph(%0:f32[2]) {
      param @w:f32[2]
      %1:f32[2] = fused(%0) {kind="k"} region(%2:f32[2]) {
        %3:f32[2] = neg(@w)
        %4:f32[2] = add(%2, %3)
        return %4
      }
      return %1
    }""").with_weights({"w": np.array([1.0, 2.0], np.float32)})
    out = Fold().run(g, None)
    body = out.eqns[0].regions[0]
    assert [e.op for e in body.eqns] == ["add"]
    assert body.eqns[0].inputs[1].name == "w.neg"
    x = np.array([5.0, 6.0], np.float32)
    np.testing.assert_array_equal(run_graph(out, [x])[0], [4.0, 4.0])


def test_int_and_bool_results():
    b = GraphBuilder()
    x = b.input([3], "i32")
    p = b.param("k", np.array([1, 2, 3], np.int32))
    q = b.mul(p, 3)
    c = b.gt(q, 4)
    y = b.where(c, x, q)
    g = b.build(y)
    out = Fold().run(g, None)
    assert [e.op for e in out.eqns] == ["where"]
    xs = np.array([10, 20, 30], np.int32)
    np.testing.assert_array_equal(run_graph(out, [xs])[0], run_graph(g, [xs])[0])


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_special_scalars(value):
    g = parse(f"""graph(%0:f32[2]) {{
      %1:f32[] = add({'nan' if value != value else 'inf'}:f32[], 1.0:f32[])
      %2:f32[2] = mul(%0, %1)
      return %2
    }}""")
    out = Fold().run(g, None)
    lit = out.eqns[0].inputs[1]
    assert repr(lit.value) == repr(value + 1.0)
