"""Build a tiny graph in pared's IR, print its text form, and run it with the numpy interpreter."""

import numpy as np

from pared import ir
from pared.backends.reference import run_graph

b = ir.GraphBuilder()
x = b.input(("B", 4))  # f32[B,4], B is a dynamic dim
w = b.param("linear.weight", np.ones((3, 4), np.float32))
bias = b.param("linear.bias", np.arange(3, dtype=np.float32))
y = b.add(b.dot_general(x, w, contract=((1,), (1,))), bias)  # y = x W^T + b
g = b.build(y)

print(ir.print_graph(g))
(out,) = run_graph(g, [np.ones((2, 4), np.float32)])
print(out)  # [[4. 5. 6.] [4. 5. 6.]]
