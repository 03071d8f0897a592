from pared.ir import parse
from pared.passes import CSE

from .golden import check_golden


def test_merges_duplicates_and_their_consumers():
    check_golden(
        CSE(),
        """graph(%0:f32[2,3], %1:f32[2,3]) {
          %2:f32[2,3] = add(%0, %1)
          %3:f32[2,3] = add(%0, %1)
          %4:f32[2,3] = exp(%2)
          %5:f32[2,3] = exp(%3)
          %6:f32[2,3] = mul(%4, %5)
          return %6
        }""",
        """graph(%0:f32[2,3], %1:f32[2,3]) {
          %2:f32[2,3] = add(%0, %1)
          %4:f32[2,3] = exp(%2)
          %6:f32[2,3] = mul(%4, %4)
          return %6
        }""",
    )


def test_commutative_order_and_literals_params_by_value():
    check_golden(
        CSE(),
        """graph(%0:f32[2,3]) {
          param @w:f32[2,3]
          %1:f32[2,3] = mul(%0, @w)
          %2:f32[2,3] = mul(@w, %0)
          %3:f32[2,3] = sub(%0, 2.0:f32[])
          %4:f32[2,3] = sub(%0, 2.0:f32[])
          %5:f32[2,3] = sub(2.0:f32[], %0)
          %6:f32[2,3] = add(%1, %2)
          %7:f32[2,3] = add(%3, %4)
          %8:f32[2,3] = add(%6, %7)
          %9:f32[2,3] = add(%8, %5)
          return %9
        }""",
        """graph(%0:f32[2,3]) {
          param @w:f32[2,3]
          %1:f32[2,3] = mul(%0, @w)
          %3:f32[2,3] = sub(%0, 2.0:f32[])
          %5:f32[2,3] = sub(2.0:f32[], %0)
          %6:f32[2,3] = add(%1, %1)
          %7:f32[2,3] = add(%3, %3)
          %8:f32[2,3] = add(%6, %7)
          %9:f32[2,3] = add(%8, %5)
          return %9
        }""",
    )


def test_different_attrs_or_literal_types_are_not_merged():
    text = """graph(%0:f32[2,3]) {
      %1:f32[3,2] = transpose(%0) {perm=(1,0)}
      %2:f32[6] = reshape(%0) {shape=(6,)}
      %3:f32[2,3] = reduce_sum(%0) {axes=(), keepdims=false}
      %4:f32[2,3] = add(%0, 0.0:f32[])
      %5:f32[2,3] = add(%0, -0.0:f32[])
      return %1, %2, %3, %4, %5
    }"""
    g = parse(text)
    assert CSE().run(g, None) is g


def test_impure_ops_are_never_merged():
    g = parse("""graph(%0:f32[2]) {
      %1:f32[2] = opaque(%0) {out_types=((f32,(2,)),), target="rand"}
      %2:f32[2] = opaque(%0) {out_types=((f32,(2,)),), target="rand"}
      return %1, %2
    }""")
    assert CSE().run(g, None) is g


def test_structurally_equal_regions_merge():
    check_golden(
        CSE(),
        """graph(%0:f32[2,3]) {
          %1:f32[2,3] = fused(%0) {kind="k"} region(%2:f32[2,3]) {
            %3:f32[2,3] = neg(%2)
            %4:f32[2,3] = add(%3, %0)
            return %4
          }
          %5:f32[2,3] = fused(%0) {kind="k"} region(%6:f32[2,3]) {
            %7:f32[2,3] = neg(%6)
            %8:f32[2,3] = add(%7, %0)
            return %8
          }
          %9:f32[2,3] = fused(%0) {kind="k"} region(%10:f32[2,3]) {
            %11:f32[2,3] = neg(%10)
            %12:f32[2,3] = add(%11, %10)
            return %12
          }
          return %1, %5, %9
        }""",
        """graph(%0:f32[2,3]) {
          %1:f32[2,3] = fused(%0) {kind="k"} region(%2:f32[2,3]) {
            %3:f32[2,3] = neg(%2)
            %4:f32[2,3] = add(%3, %0)
            return %4
          }
          %9:f32[2,3] = fused(%0) {kind="k"} region(%10:f32[2,3]) {
            %11:f32[2,3] = neg(%10)
            %12:f32[2,3] = add(%11, %10)
            return %12
          }
          return %1, %1, %9
        }""",
    )


def test_duplicates_inside_a_region_body():
    check_golden(
        CSE(),
        """graph(%0:f32[2,3]) {
          %1:f32[2,3] = fused(%0) {kind="k"} region(%2:f32[2,3]) {
            %3:f32[2,3] = exp(%2)
            %4:f32[2,3] = exp(%2)
            %5:f32[2,3] = add(%3, %4)
            return %5
          }
          return %1
        }""",
        """graph(%0:f32[2,3]) {
          %1:f32[2,3] = fused(%0) {kind="k"} region(%2:f32[2,3]) {
            %3:f32[2,3] = exp(%2)
            %5:f32[2,3] = add(%3, %3)
            return %5
          }
          return %1
        }""",
    )
