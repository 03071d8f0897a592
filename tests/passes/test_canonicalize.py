from pared.ir import parse
from pared.passes import Canonicalize

from .golden import check_golden

C = Canonicalize()


def test_transpose_into_dot_general_rhs():
    check_golden(
        C,
        """graph(%0:f32[4,3]) {
          param @fc.weight:f32[2,3]
          %1:f32[3,2] = transpose(@fc.weight) {perm=(1,0)}
          %2:f32[4,2] = dot_general(%0, %1) {contract=((1,),(0,))}
          return %2
        }""",
        """graph(%0:f32[4,3]) {
          param @fc.weight:f32[2,3]
          %2:f32[4,2] = dot_general(%0, @fc.weight) {contract=((1,),(1,))}
          return %2
        }""",
    )


def test_transpose_into_dot_general_lhs_and_batch():
    check_golden(
        C,
        """graph(%0:f32[5,3,4], %1:f32[5,4,2]) {
          %2:f32[5,4,3] = transpose(%0) {perm=(0,2,1)}
          %3:f32[5,3,2] = dot_general(%2, %1) {contract=((1,),(1,)), batch=((0,),(0,))}
          return %3
        }""",
        """graph(%0:f32[5,3,4], %1:f32[5,4,2]) {
          %3:f32[5,3,2] = dot_general(%0, %1) {contract=((2,),(1,)), batch=((0,),(0,))}
          return %3
        }""",
    )


def test_transpose_that_reorders_free_dims_stays():
    text = """graph(%0:f32[3,4,6]) {
      param @w:f32[6,2]
      %1:f32[4,3,6] = transpose(%0) {perm=(1,0,2)}
      %2:f32[4,3,2] = dot_general(%1, @w) {contract=((2,),(0,))}
      return %2
    }"""
    g = parse(text)
    assert C.run(g, None) is g


def test_transpose_of_transpose():
    check_golden(
        C,
        """graph(%0:f32[2,3,4]) {
          %1:f32[3,4,2] = transpose(%0) {perm=(1,2,0)}
          %2:f32[4,3,2] = transpose(%1) {perm=(1,0,2)}
          %3:f32[2,3,4] = transpose(%1) {perm=(2,0,1)}
          %4:f32[2,3,4] = add(%0, %3)
          return %2, %4
        }""",
        """graph(%0:f32[2,3,4]) {
          %2:f32[4,3,2] = transpose(%0) {perm=(2,1,0)}
          %4:f32[2,3,4] = add(%0, %0)
          return %2, %4
        }""",
    )


def test_identity_shape_ops_and_reshape_chain():
    check_golden(
        C,
        """graph(%0:f32[2,3,4]) {
          %1:f32[2,3,4] = transpose(%0) {perm=(0,1,2)}
          %2:f32[2,3,4] = reshape(%1) {shape=(2,3,4)}
          %3:f32[2,3,4] = cast(%2) {dtype=f32}
          %4:f32[6,4] = reshape(%3) {shape=(6,4)}
          %5:f32[24] = reshape(%4) {shape=(24,)}
          %6:f16[24] = cast(%5) {dtype=f16}
          return %6
        }""",
        """graph(%0:f32[2,3,4]) {
          %5:f32[24] = reshape(%0) {shape=(24,)}
          %6:f16[24] = cast(%5) {dtype=f16}
          return %6
        }""",
    )


def test_arithmetic_identities():
    check_golden(
        C,
        """graph(%0:f32[2,3], %1:i32[3]) {
          %2:f32[2,3] = mul(%0, 1.0:f32[])
          %3:f32[2,3] = mul(1.0:f32[], %2)
          %4:f32[2,3] = add(%3, 0.0:f32[])
          %5:f32[2,3] = add(-0.0:f32[], %4)
          %6:f32[2,3] = sub(%5, 0.0:f32[])
          %7:f32[2,3] = sub(0.0:f32[], %6)
          %8:i32[3] = mul(%1, 1:i32[])
          %9:f32[2,3] = neg(%7)
          %10:f32[2,3] = neg(%9)
          return %10, %8
        }""",
        """graph(%0:f32[2,3], %1:i32[3]) {
          %7:f32[2,3] = sub(0.0:f32[], %0)
          return %7, %1
        }""",
    )


def test_identities_that_change_the_type_stay():
    text = """graph(%0:f32[3]) {
      %1:f32[2,3] = broadcast_in_dim(1.0:f32[]) {shape=(2,3), dims=()}
      %2:f32[2,3] = mul(%0, %1)
      %4:f32[3] = mul(%0, 2.0:f32[])
      return %2, %4
    }"""
    g = parse(text)
    assert C.run(g, None) is g


def test_rewrites_inside_regions():
    check_golden(
        C,
        """graph(%0:f32[2,3]) {
          %1:f32[2,3] = fused(%0) {kind="k"} region(%2:f32[2,3]) {
            %3:f32[2,3] = neg(%2)
            %4:f32[2,3] = neg(%3)
            %5:f32[2,3] = mul(%4, 1.0:f32[])
            return %5
          }
          return %1
        }""",
        """graph(%0:f32[2,3]) {
          %1:f32[2,3] = fused(%0) {kind="k"} region(%2:f32[2,3]) {
            return %2
          }
          return %1
        }""",
    )
