"""pared's own CPU kernels: sparse (and sparse + quantized) linear layers.

- :mod:`.formats`: the packed layouts (ELL / constant fan-in, NM8) built from a layer's weight.
- ``sparse_kernels.cpp``: the kernels (C++, OpenMP; AVX-512 VBMI/VNNI where the CPU has them).
- :mod:`.build`: compile once per machine with g++, cache, load with ctypes; None + one warning
  when there is no toolchain.
- :mod:`.kernels`: :class:`~.kernels.SparseLinear`, the torch callable a lowered module calls.

The torch backend's lowering (``pared.backends.torch.sparse``) offers these kernels to the cost
model; docs/cpu_kernels.md has the design and the measurements.
"""
