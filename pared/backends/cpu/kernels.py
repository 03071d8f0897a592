"""The sparse linear as a torch callable: ``SparseLinear(weight)(x, bias) -> y``.

A thin host wrapper in the Triton-tutorial manner: it checks the input, allocates the output and
calls the C++ kernel through ctypes (``build.library()``), with the plan (the packed weight's
pointers, made once) so a call costs ~2 us of Python. The object owns the packed tensors; a
lowered FX module calls it like a function. Activations are read as f32 (a bf16 input is widened
and the result narrowed back); ``act_dtype=bf16`` rounds them to bf16 first, as qlinear's
reference does; ``act="dynamic"``/``"static"`` quantizes them to int8 per token / per tensor in
the kernel (qlinear's W8A8 numerics).
"""

from __future__ import annotations

import ctypes
from typing import Optional, Union

import numpy as np
import torch

from .build import library
from .formats import VTYPES, EllWeight, Nm8Weight

ALGOS = {"auto": -1, "gemv": 0, "gemm16": 1, "gemm64": 2}


def _tensor(a: Optional[np.ndarray]) -> Optional[torch.Tensor]:
    return None if a is None else torch.from_numpy(np.ascontiguousarray(a))


def _ptr(t: Optional[torch.Tensor]):
    return None if t is None else t.data_ptr()


class SparseLinear:
    """``y = x @ W^T (+ bias)`` for a packed sparse weight, on CPU tensors.

    Args:
        weight: an :class:`EllWeight` or :class:`Nm8Weight`.
        act: ``none`` (float activations), ``dynamic`` (int8 per token) or ``static`` (int8 with
            ``act_scale``); an Nm8Weight is always int8.
        act_scale: the static per-tensor activation scale.
        act_dtype: ``torch.bfloat16`` rounds float activations to bf16 before the product.
        algo: ``auto`` (by the number of rows), ``gemv``, ``gemm16`` or ``gemm64`` (tests pin one).
    """

    def __init__(self, weight: Union[EllWeight, Nm8Weight], *, act: str = "none", act_scale: Optional[float] = None,
                 act_dtype: Optional[torch.dtype] = None, algo: str = "auto"):
        if act not in ("none", "dynamic", "static"):
            raise ValueError(f"SparseLinear: act must be none, dynamic or static, got {act!r}")
        if act == "static" and act_scale is None:
            raise ValueError("SparseLinear: act=static needs act_scale")
        self.weight = weight
        self.n, self.k = weight.n, weight.k
        self.act = "dynamic" if isinstance(weight, Nm8Weight) and act == "none" else act
        self.act_scale = None if act_scale is None else torch.tensor([float(act_scale)], dtype=torch.float32)
        self.act_dtype = act_dtype if act == "none" else None
        self.algo = ALGOS[algo]
        if isinstance(weight, EllWeight):
            self.tensors = {name: _tensor(getattr(weight, name)) for name in ("cols", "vals", "scales", "zeros")}
        else:
            self.tensors = {"meta": _tensor(weight.meta), "wsum": _tensor(weight.wsum), "scale": _tensor(weight.scale)}
        self._plan = None
        self.__name__ = f"sparse_linear_{self.kind}"

    @property
    def kind(self) -> str:
        if isinstance(self.weight, Nm8Weight):
            return "nm8_w8a8"
        return f"ell_{self.weight.vtype}" + ("_w8a8" if self.act != "none" else "")

    def _make_plan(self):
        lib = library()
        if lib is None:
            raise RuntimeError("SparseLinear: the sparse CPU kernels are unavailable (see the warning above)")
        t, w = self.tensors, self.weight
        scale_ptr = _ptr(self.act_scale) if self.act == "static" else None
        if isinstance(w, EllWeight):
            plan = lib.lib.pared_plan_ell(_ptr(t["cols"]), _ptr(t["vals"]), VTYPES[w.vtype], w.n, w.k, w.fanin,
                                          w.group, _ptr(t["scales"]), _ptr(t["zeros"]), int(w.contiguous),
                                          int(self.act != "none"), scale_ptr)
        else:
            if not lib.nm8:
                raise RuntimeError("SparseLinear: this CPU build has no NM8 kernel (needs AVX512-VBMI and VNNI)")
            plan = lib.lib.pared_plan_nm8(_ptr(t["meta"]), _ptr(t["wsum"]), _ptr(t["scale"]), w.n, w.k, scale_ptr)
        self._plan = (lib, ctypes.c_void_p(plan))
        return self._plan

    def __call__(self, x: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        lib, plan = self._plan or self._make_plan()
        lead = x.shape[:-1]
        if x.shape[-1] != self.k:
            raise ValueError(f"SparseLinear: x has K={x.shape[-1]}, the weight {self.k}")
        x2 = x.reshape(-1, self.k)
        if self.act_dtype is not None and self.act_dtype != x2.dtype:
            x2 = x2.to(self.act_dtype)
        if x2.dtype != torch.float32 or not x2.is_contiguous():
            x2 = x2.float().contiguous()
        if bias is not None and (bias.dtype != torch.float32 or not bias.is_contiguous()):
            bias = bias.float().contiguous()
        y = torch.empty(x2.shape[0], self.n, dtype=torch.float32)
        rc = lib.lib.pared_run(plan, x2.data_ptr(), x2.shape[0], _ptr(bias), y.data_ptr(), self.algo,
                               torch.get_num_threads())
        if rc:
            raise RuntimeError(f"SparseLinear: kernel returned {rc}")
        y = y.reshape(*lead, self.n)
        return y if x.dtype == torch.float32 else y.to(x.dtype)

    # the plan holds raw pointers: a copy (deepcopy, pickle) makes its own from its own tensors
    def __getstate__(self):
        d = dict(self.__dict__)
        d["_plan"] = None
        return d

    def __del__(self):
        plan = getattr(self, "_plan", None)
        if plan is not None:
            try:
                plan[0].lib.pared_plan_free(plan[1])
            except Exception:  # interpreter shutdown
                pass


__all__ = ["ALGOS", "SparseLinear"]
