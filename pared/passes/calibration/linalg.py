"""Dense linear algebra shared by the Hessian-based solvers (SparseGPT, GPTQ, the least-squares refit).

The solvers need the upper Cholesky factor ``U`` of ``H^-1`` (``H^-1 = U^T U``). Forming ``H^-1``
and factoring it again costs about ``4 n^3`` flops; for a down projection (n = 8192) that is ~45 s
in float64 on two cores. With ``J`` the reversal permutation and ``J H J = L L^T``,
``H^-1 = J L^-T L^-1 J``, so ``U = J L^-1 J`` is upper triangular with a positive diagonal: one
Cholesky and one triangular inverse, ``2/3 n^3`` flops.
"""

from __future__ import annotations

import numpy as np

try:  # scipy ships with jax and most scientific installs; plain numpy is the fallback
    from scipy.linalg import blas as _blas
    from scipy.linalg import lapack as _lapack
except ImportError:  # pragma: no cover - exercised only where scipy is absent
    _blas = _lapack = None


def gram_upper_add(acc: np.ndarray | None, x: np.ndarray) -> np.ndarray:
    """``acc + X^T X``: the product in float32 by BLAS ``ssyrk`` (upper triangle only, half a GEMM's
    flops), summed in float64.

    ``x``: (tokens, n) float32; ``acc``: the column-major (n, n) float64 array an earlier call
    returned (updated in place), or None. Only the upper triangle is meaningful:
    :func:`symmetric_from_upper` completes the matrix. Without scipy the full product is added.
    """
    x = np.asarray(x, dtype=np.float32)
    if _blas is None:
        v = x.T @ x
    else:
        a = x.T if x.flags.c_contiguous else np.asfortranarray(x.T)  # (n, tokens), column-major: no copy
        v = _blas.ssyrk(1.0, a, trans=0, lower=0)
    if acc is None:
        return np.asfortranarray(v, dtype=np.float64)
    return np.add(acc, v, out=acc)


def symmetric_from_upper(u: np.ndarray, overwrite: bool = False, block: int = 256) -> np.ndarray:
    """The symmetric matrix whose upper triangle is ``u``'s (float64, C-contiguous).

    With ``overwrite`` (a float64 ``u``) the lower triangle is written in ``u``'s own memory a
    block of rows at a time and a view of ``u`` is returned: no n x n temporary (a Hessian of an
    8192-wide input is 512 MiB)."""
    u = np.asarray(u)
    out = u if overwrite and u.dtype == np.float64 and u.flags.writeable else np.array(u, dtype=np.float64)
    n = out.shape[0]
    for i0 in range(0, n, block):
        i1 = min(i0 + block, n)
        out[i0:i1, :i0] = out[:i0, i0:i1].T  # rows below the diagonal block from the columns above it
        d = np.triu(out[i0:i1, i0:i1])
        out[i0:i1, i0:i1] = d + np.triu(d, 1).T
    return out if out.flags.c_contiguous else out.T  # symmetric: a column-major array's transpose is itself


def cholesky_lower(h: np.ndarray, overwrite: bool = False) -> np.ndarray:
    """Lower Cholesky factor of a symmetric positive definite float64 matrix.

    Through LAPACK ``dpotrf`` in column-major order when scipy is there (3x faster than
    ``np.linalg.cholesky`` at n = 8192 on the 2-core machine). A C-contiguous symmetric ``h`` is
    its own transpose, so it is passed as column-major without a copy; with ``overwrite`` its
    memory holds the factor afterwards. Raises ``np.linalg.LinAlgError`` when ``h`` is not
    positive definite.
    """
    if _lapack is None:
        return np.linalg.cholesky(h)
    a = np.asarray(h, dtype=np.float64)
    a = a.T if a.flags.c_contiguous else np.asfortranarray(a)
    low, info = _lapack.dpotrf(a, lower=1, clean=1, overwrite_a=1 if overwrite else 0)
    if info != 0:
        raise np.linalg.LinAlgError(f"matrix is not positive definite (leading minor {info})")
    return low


def lower_triangular_inverse(low: np.ndarray, overwrite: bool = False) -> np.ndarray:
    """Inverse of a lower-triangular float64 matrix (LAPACK ``dtrtri`` when scipy is there)."""
    if _lapack is not None:
        inv, info = _lapack.dtrtri(np.asfortranarray(low, dtype=np.float64), lower=1,
                                   overwrite_c=1 if overwrite else 0)
        if info == 0:
            for j in range(1, inv.shape[1]):  # zero the strict upper triangle in place (column-major)
                inv[:j, j] = 0.0
            return inv
    return np.linalg.inv(low)


def _reverse_in_place(a: np.ndarray) -> None:
    """``a[:] = a[::-1, ::-1]`` for a C-contiguous square ``a``, one row pair at a time (no n x n temporary)."""
    n = a.shape[0]
    for i in range((n + 1) // 2):
        j = n - 1 - i
        top = a[i, ::-1].copy()
        a[i] = a[j, ::-1]
        a[j] = top


def upper_cholesky_of_inverse(h: np.ndarray, overwrite: bool = False) -> np.ndarray:
    """Upper-triangular ``U`` with ``U^T U = h^-1`` for a symmetric positive definite ``h``.

    The result may be column-major. With ``overwrite`` (and a C-contiguous float64 ``h``) the
    work happens in ``h``'s memory and nothing n x n is allocated; otherwise one copy of ``h``.
    Raises ``np.linalg.LinAlgError`` when ``h`` is not positive definite (callers dampen more);
    ``h`` is then left reversed when overwritten.
    """
    h = np.asarray(h)
    own = overwrite and h.dtype == np.float64 and h.flags.c_contiguous and h.flags.writeable
    work = h if own else np.array(h, dtype=np.float64, order="C")
    _reverse_in_place(work)  # J h J, symmetric: its C buffer is also its column-major self
    if _lapack is None:
        inv = np.linalg.inv(np.linalg.cholesky(work))
        return np.ascontiguousarray(inv[::-1, ::-1])
    low = cholesky_lower(work, overwrite=True)  # column-major, in work's memory
    inv = lower_triangular_inverse(low, overwrite=True)
    if not np.shares_memory(inv, work):  # LAPACK wrappers copied after all: carry on in the copy
        return np.ascontiguousarray(inv[::-1, ::-1])
    # work's C view now holds inv^T; reversing it gives (J inv J)^T = U^T
    _reverse_in_place(work)
    return work.T


def inverse_from_cholesky(h: np.ndarray) -> np.ndarray:
    """``h^-1`` of a symmetric positive definite ``h`` through its Cholesky factor (raises when singular)."""
    inv_low = lower_triangular_inverse(cholesky_lower(h))
    return inv_low.T @ inv_low
