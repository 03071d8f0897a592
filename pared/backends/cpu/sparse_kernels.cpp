// pared's sparse CPU kernels: y[M, N] = x[M, K] . W[N, K]^T (+ bias) for row-sparse weights.
//
// Every sparse weight reaches these kernels in one of two layouts (pared/backends/cpu/formats.py
// builds them from the IR's encodings):
//
//  * ELL ("constant fan-in", SRigL's condensed layout): every output row n keeps F entries,
//    values vals[n, 0:F] and columns cols[n, 0:F] (uint16, ascending). N:M (F = K n / m), a
//    constant fan-in mask (F = kept per row) and blocks all map onto it; an unstructured mask is
//    padded to its fullest row with zero values. Values are f32, bf16, int8 or int4 (two per
//    byte, low nibble first) with optional scales (and zero points) per P consecutive kept
//    entries: P = F is per output channel, P = gs n / m is an N:M weight's group of gs columns.
//
//    - ell_gemv: M small. Each row gathers x[m, cols[j]] (AVX-512: vgatherdps, 16 lanes;
//      chunks of 16 consecutive columns, as 1x16 blocks give, load x directly) and multiplies
//      by the converted values; the P-groups are scaled in vector registers and the row is
//      reduced once.
//    - ell_gemm: M larger. x is transposed once per block of MB rows into XT[K][MB] (each of
//      its rows a few vector registers), and each kept entry becomes a broadcast
//      multiply-add of one XT row: acc[0:MB] += v_j * XT[cols[j]][0:MB]. No gathers, one load
//      per FMA; the loop vectorizes over MB on any x86/ARM target the compiler knows.
//
//  * NM8 (2:4 and 4:8 with int8 values and int8 activations, AVX512-VBMI + VNNI): every 8
//    consecutive columns of a row keep exactly 4 (2:4 keeps 2 of each half). x is quantized
//    per token and stored as u8 (x_q + 128) in VNNI order: blocks of 16 rows, each column
//    group of 4 a 64-byte vector [16 rows][4 columns]. For one 8-column window, vpermt2b picks
//    each row's 4 kept columns out of the two group vectors (the control is a per (row, window)
//    dword of positions, broadcast and added to a per-lane base) and vpdpbusd multiplies them
//    with the row's 4 int8 values: 64 useful MACs per permute + dot, where a dense int8 GEMM
//    spends a dot on 64 MACs of which half are zeros. The two group vectors are loaded once
//    per window and reused by R = 8 output rows. The +128 offset is removed with the row's
//    weight sum: sum (x_q + 128) w = sum x_q w + 128 sum w.
//
// Numerics: ell_* accumulate in f32 in column order (the reference sums in f32 or f64; equal
// to f32 rounding). With int8 activations the products are integers and f32 sums of them are
// exact below 2^24 (|x_q w| <= 127^2, so up to ~1000 kept entries per row); NM8 is exact (i32).
//
// Threads: OpenMP. The library links libgomp.so.1, which resolves to the copy torch already
// loaded, so torch.set_num_threads governs these kernels too (one thread pool in the process).

#include <cmath>
#include <cstdint>
#include <cstring>
#include <new>
#include <vector>

#include <omp.h>

#if defined(__AVX512F__) && defined(__AVX512BW__)
#include <immintrin.h>
#define PARED_AVX512 1
#endif
#if defined(PARED_AVX512) && defined(__AVX512VBMI__) && defined(__AVX512VNNI__)
#define PARED_NM8 1
#endif

namespace {

enum VType { F32 = 0, BF16 = 1, I8 = 2, U4 = 3 };

// A 64-byte aligned scratch buffer (vector loads of XT rows must not straddle cache lines).
template <typename T>
struct AlignedBuffer {
  T* p;
  explicit AlignedBuffer(size_t n) : p(static_cast<T*>(::operator new[](n * sizeof(T) + 64, std::align_val_t(64)))) {}
  ~AlignedBuffer() { ::operator delete[](p, std::align_val_t(64)); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  T* data() { return p; }
  const T* data() const { return p; }
};

inline float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline float value_at(const void* vals, int vtype, int64_t i) {
  switch (vtype) {
    case F32: return static_cast<const float*>(vals)[i];
    case BF16: return bf16_to_f32(static_cast<const uint16_t*>(vals)[i]);
    case I8: return float(static_cast<const int8_t*>(vals)[i]);
    default: {
      uint8_t b = static_cast<const uint8_t*>(vals)[i >> 1];
      return float((i & 1) ? (b >> 4) : (b & 15));
    }
  }
}

// Offset of row n's values in elements (int4: two per byte; rows start on a byte).
inline int64_t row_offset(int vtype, int64_t n, int64_t F) { return vtype == U4 ? n * ((F + 1) / 2) * 2 : n * F; }

struct Ell {
  const uint16_t* cols;
  const void* vals;
  int vtype;
  int64_t N, F, P;          // P: kept entries per scale group (F: per channel)
  const float* scales;      // [N, F / P] or null
  const float* zeros;       // [N, F / P] or null: w = (q - zero) * scale
  const float* bias;        // [N] or null
  int contiguous;           // every chunk of 16 kept entries has 16 consecutive columns
};

// ---- ell_gemv: a few rows of x, gathers -----------------------------------------------------

// Scalar gathers, four accumulators: on Zen 4 a 16-lane vgatherdps costs ~24 cycles (measured:
// 1152 gathers in 8 us), slower than 16 scalar loads; chunks of 16 consecutive columns (1x16
// blocks) load x as one vector instead (the compiler vectorizes that loop).
template <int VT>
inline float vat(const void* vals, int64_t i) {
  return value_at(vals, VT, i);
}

template <int VT>
float gemv_row(const Ell& w, const float* x, int64_t n) {
  const uint16_t* cols = w.cols + n * w.F;
  const int64_t base = row_offset(VT, n, w.F);
  const int64_t groups = w.F / w.P;
  float total = 0.f;
  for (int64_t g = 0; g < groups; ++g) {
    float a0 = 0.f, a1 = 0.f, a2 = 0.f, a3 = 0.f, s0 = 0.f, s1 = 0.f;
    int64_t j = g * w.P;
    const int64_t j1 = j + w.P;
    if (w.contiguous) {
      for (; j + 16 <= j1; j += 16) {
        const float* xr = x + cols[j];
        float acc[16], sx[16];
#pragma omp simd
        for (int i = 0; i < 16; ++i) {
          acc[i] = vat<VT>(w.vals, base + j + i) * xr[i];
          sx[i] = xr[i];
        }
        for (int i = 0; i < 16; i += 2) {
          a0 += acc[i];
          a1 += acc[i + 1];
          s0 += sx[i];
          s1 += sx[i + 1];
        }
      }
    }
    for (; j + 4 <= j1; j += 4) {
      const float x0 = x[cols[j]], x1 = x[cols[j + 1]], x2 = x[cols[j + 2]], x3 = x[cols[j + 3]];
      a0 += vat<VT>(w.vals, base + j) * x0;
      a1 += vat<VT>(w.vals, base + j + 1) * x1;
      a2 += vat<VT>(w.vals, base + j + 2) * x2;
      a3 += vat<VT>(w.vals, base + j + 3) * x3;
      if (w.zeros) {
        s0 += x0 + x1;
        s1 += x2 + x3;
      }
    }
    for (; j < j1; ++j) {
      const float xv = x[cols[j]];
      a0 += vat<VT>(w.vals, base + j) * xv;
      s0 += xv;
    }
    float acc = (a0 + a1) + (a2 + a3);
    if (w.scales) {
      if (w.zeros) acc -= w.zeros[n * groups + g] * (s0 + s1);
      total += w.scales[n * groups + g] * acc;
    } else {
      total += acc;
    }
  }
  return total;
}

template <int VT>
void ell_gemv_t(const Ell& w, const float* x, int64_t M, int64_t ldx, const float* xscale, float* y, int64_t ldy,
                int nthreads) {
  const bool par = nthreads > 1 && w.N * w.F * M >= 32768;
#pragma omp parallel for schedule(static) num_threads(nthreads) if (par)
  for (int64_t n = 0; n < w.N; ++n) {
    for (int64_t m = 0; m < M; ++m) {
      float v = gemv_row<VT>(w, x + m * ldx, n);
      if (xscale) v *= xscale[m];
      if (w.bias) v += w.bias[n];
      y[m * ldy + n] = v;
    }
  }
}

void ell_gemv(const Ell& w, const float* x, int64_t M, int64_t ldx, const float* xscale, float* y, int64_t ldy,
              int nthreads) {
  switch (w.vtype) {
    case F32: ell_gemv_t<F32>(w, x, M, ldx, xscale, y, ldy, nthreads); break;
    case BF16: ell_gemv_t<BF16>(w, x, M, ldx, xscale, y, ldy, nthreads); break;
    case I8: ell_gemv_t<I8>(w, x, M, ldx, xscale, y, ldy, nthreads); break;
    default: ell_gemv_t<U4>(w, x, M, ldx, xscale, y, ldy, nthreads); break;
  }
}

// ---- ell_gemm: transposed x blocks, broadcast FMAs --------------------------------------------

// U independent accumulator sets over the kept entries (j mod U) hide the FMA latency: with
// MB = 16 one row of XT is one vector, and a single chain would run at one FMA per 4 cycles.
template <int VT, int MB, bool ZP>
void gemm_rows(const Ell& w, const float* XT, int64_t rows, int64_t m0, const float* xscale, int64_t n0, int64_t n1,
               float* y, int64_t ldy) {
  constexpr int U = MB >= 64 ? 1 : 64 / MB;
  const int64_t groups = w.F / w.P;
  for (int64_t n = n0; n < n1; ++n) {
    const uint16_t* cols = w.cols + n * w.F;
    const int64_t base = row_offset(VT, n, w.F);
    float out[MB];
    for (int i = 0; i < MB; ++i) out[i] = 0.f;
    for (int64_t g = 0; g < groups; ++g) {
      float acc[U][MB], sx[U][MB];
      for (int u = 0; u < U; ++u)
        for (int i = 0; i < MB; ++i) acc[u][i] = sx[u][i] = 0.f;
      int64_t j = g * w.P;
      const int64_t j1 = j + w.P;
      for (; j + U <= j1; j += U) {
        for (int u = 0; u < U; ++u) {
          const float v = vat<VT>(w.vals, base + j + u);
          const float* xr = XT + int64_t(cols[j + u]) * MB;
#pragma omp simd
          for (int i = 0; i < MB; ++i) acc[u][i] += v * xr[i];
          if (ZP) {
#pragma omp simd
            for (int i = 0; i < MB; ++i) sx[u][i] += xr[i];
          }
        }
      }
      for (; j < j1; ++j) {
        const float v = vat<VT>(w.vals, base + j);
        const float* xr = XT + int64_t(cols[j]) * MB;
#pragma omp simd
        for (int i = 0; i < MB; ++i) acc[0][i] += v * xr[i];
        if (ZP) {
#pragma omp simd
          for (int i = 0; i < MB; ++i) sx[0][i] += xr[i];
        }
      }
      for (int u = 1; u < U; ++u)
#pragma omp simd
        for (int i = 0; i < MB; ++i) {
          acc[0][i] += acc[u][i];
          sx[0][i] += sx[u][i];
        }
      if (w.scales) {
        const float s = w.scales[n * groups + g];
        const float z = ZP ? w.zeros[n * groups + g] : 0.f;
#pragma omp simd
        for (int i = 0; i < MB; ++i) out[i] += s * (acc[0][i] - z * sx[0][i]);
      } else {
#pragma omp simd
        for (int i = 0; i < MB; ++i) out[i] += acc[0][i];
      }
    }
    const float b = w.bias ? w.bias[n] : 0.f;
    if (xscale) {
      for (int64_t i = 0; i < rows; ++i) y[(m0 + i) * ldy + n] = out[i] * xscale[m0 + i] + b;
    } else {
      for (int64_t i = 0; i < rows; ++i) y[(m0 + i) * ldy + n] = out[i] + b;
    }
  }
}

template <int VT, int MB>
void gemm_rows_any(const Ell& w, const float* XT, int64_t rows, int64_t m0, const float* xscale, int64_t n0,
                   int64_t n1, float* y, int64_t ldy) {
  if (w.zeros)
    gemm_rows<VT, MB, true>(w, XT, rows, m0, xscale, n0, n1, y, ldy);
  else
    gemm_rows<VT, MB, false>(w, XT, rows, m0, xscale, n0, n1, y, ldy);
}

template <int MB>
void ell_gemm(const Ell& w, const float* x, int64_t M, int64_t K, int64_t ldx, const float* xscale, float* y,
              int64_t ldy, int nthreads) {
  const int64_t mblocks = (M + MB - 1) / MB;
  AlignedBuffer<float> XT(size_t(mblocks) * K * MB);
  // x -> XT[block][K][MB] (rows past M are zero); contiguous writes, MB sequential read streams
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1 && M * K >= 65536)
  for (int64_t b = 0; b < mblocks; ++b) {
    float* dst = XT.data() + b * K * MB;
    const int64_t rows = M - b * MB < MB ? M - b * MB : MB;
    if (rows < MB) std::memset(dst, 0, sizeof(float) * K * MB);
    const float* src = x + b * MB * ldx;
    for (int64_t k = 0; k < K; ++k)
      for (int64_t i = 0; i < rows; ++i) dst[k * MB + i] = src[i * ldx + k];
  }
  const int64_t NB = 16;  // rows of W per task
  const int64_t nblocks = (w.N + NB - 1) / NB;
  const bool par = nthreads > 1 && w.N * w.F * M >= 65536;
#pragma omp parallel for collapse(2) schedule(dynamic, 1) num_threads(nthreads) if (par)
  for (int64_t b = 0; b < mblocks; ++b) {
    for (int64_t nb = 0; nb < nblocks; ++nb) {
      const int64_t rows = M - b * MB < MB ? M - b * MB : MB;
      const int64_t n1 = (nb + 1) * NB < w.N ? (nb + 1) * NB : w.N;
      const float* xt = XT.data() + b * K * MB;
      switch (w.vtype) {
        case F32: gemm_rows_any<F32, MB>(w, xt, rows, b * MB, xscale, nb * NB, n1, y, ldy); break;
        case BF16: gemm_rows_any<BF16, MB>(w, xt, rows, b * MB, xscale, nb * NB, n1, y, ldy); break;
        case I8: gemm_rows_any<I8, MB>(w, xt, rows, b * MB, xscale, nb * NB, n1, y, ldy); break;
        default: gemm_rows_any<U4, MB>(w, xt, rows, b * MB, xscale, nb * NB, n1, y, ldy); break;
      }
    }
  }
}

// ---- per-token int8 activations (qlinear act=dynamic) -----------------------------------------

// s = max|x| / 127 (1 for an all-zero row), x_q = clip(rint(x / s), -127, 127): qops.quantize_activation.
void quantize_rows(const float* x, int64_t M, int64_t K, int64_t ldx, float* xq, float* scale, const float* fixed) {
  for (int64_t m = 0; m < M; ++m) {
    const float* r = x + m * ldx;
    float s;
    if (fixed) {
      s = *fixed;
    } else {
      float amax = 0.f;
      for (int64_t k = 0; k < K; ++k) amax = std::fmax(amax, std::fabs(r[k]));
      s = amax / 127.0f;
      if (!(s > 0.f)) s = 1.f;
    }
    scale[m] = s;
    for (int64_t k = 0; k < K; ++k) {
      float q = std::nearbyint(r[k] / s);
      if (std::isnan(q)) q = 0.f;
      xq[m * K + k] = q < -127.f ? -127.f : (q > 127.f ? 127.f : q);
    }
  }
}

#ifdef PARED_NM8
// ---- NM8: 4 of every 8 columns, int8 x int8 (vpermt2b + vpdpbusd) ------------------------------

constexpr int R = 8;  // output rows sharing each loaded pair of group vectors

void nm8_gemm(const uint8_t* XQ, int64_t Mp, int64_t K8, const uint32_t* meta, const int32_t* wsum,
              const float* wscale, const float* bias, const float* xscale, int64_t M, int64_t N, float* y,
              int64_t ldy, int nthreads) {
  // XQ: [Mp / 16][K8 * 2 groups][16 rows][4 bytes]; meta: [ceil(N / R)][K8][R][sel, w] (u32 pairs)
  const int64_t mblocks = Mp / 16, nblocks = (N + R - 1) / R;
  const __m512i lane_base = _mm512_set_epi32(60, 56, 52, 48, 44, 40, 36, 32, 28, 24, 20, 16, 12, 8, 4, 0);
  const __m512i base = _mm512_mullo_epi32(lane_base, _mm512_set1_epi32(0x01010101));
  const bool par = nthreads > 1 && N * K8 * Mp >= 8192;
#pragma omp parallel for collapse(2) schedule(dynamic, 1) num_threads(nthreads) if (par)
  for (int64_t nb = 0; nb < nblocks; ++nb) {
    for (int64_t b = 0; b < mblocks; ++b) {
      const uint8_t* xb = XQ + b * K8 * 128;
      const uint32_t* mb = meta + nb * K8 * R * 2;
      __m512i acc[R];
      for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_si512();
      for (int64_t p = 0; p < K8; ++p) {
        const __m512i A = _mm512_loadu_si512(xb + p * 128);
        const __m512i B = _mm512_loadu_si512(xb + p * 128 + 64);
        const uint32_t* mp = mb + p * R * 2;
        for (int r = 0; r < R; ++r) {
          const __m512i ctrl = _mm512_add_epi32(base, _mm512_set1_epi32(int(mp[2 * r])));
          const __m512i t = _mm512_permutex2var_epi8(A, ctrl, B);
          acc[r] = _mm512_dpbusd_epi32(acc[r], t, _mm512_set1_epi32(int(mp[2 * r + 1])));
        }
      }
      for (int r = 0; r < R; ++r) {
        const int64_t n = nb * R + r;
        if (n >= N) break;
        alignas(64) int32_t out[16];
        _mm512_store_si512(out, acc[r]);
        const float ws = wscale[n], bb = bias ? bias[n] : 0.f;
        const int32_t off = 128 * wsum[n];
        for (int i = 0; i < 16; ++i) {
          const int64_t m = b * 16 + i;
          if (m < M) y[m * ldy + n] = float(out[i] - off) * xscale[m] * ws + bb;
        }
      }
    }
  }
}

// x quantized per token (as quantize_rows) straight into u8 (x_q + 128) in VNNI order:
// [Mp / 16][K8 * 2][16][4]; columns past K and rows past M hold x_q = 0.
void nm8_pack_x(const float* x, int64_t M, int64_t K, int64_t ldx, int64_t K8, const float* fixed, uint8_t* XQ,
                float* xscale, int nthreads) {
  const int64_t Mp = (M + 15) / 16 * 16;
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1 && M * K >= 65536)
  for (int64_t m = 0; m < Mp; ++m) {
    uint8_t* row = XQ + (m / 16) * K8 * 128 + (m % 16) * 4;
    if (m >= M) {
      for (int64_t g = 0; g < K8 * 2; ++g) std::memset(row + g * 64, 128, 4);
      continue;
    }
    const float* r = x + m * ldx;
    float s;
    if (fixed) {
      s = *fixed;
    } else {
      __m512 amax = _mm512_setzero_ps();
      int64_t k = 0;
      for (; k + 16 <= K; k += 16) amax = _mm512_max_ps(amax, _mm512_abs_ps(_mm512_loadu_ps(r + k)));
      float a = _mm512_reduce_max_ps(amax);
      for (; k < K; ++k) a = std::fmax(a, std::fabs(r[k]));
      s = a / 127.0f;
      if (!(s > 0.f)) s = 1.f;
    }
    xscale[m] = s;
    const __m512 sv = _mm512_set1_ps(s);
    for (int64_t g4 = 0; g4 < K8 * 2; g4 += 4) {  // 16 columns = 4 groups of 4
      const int64_t k = g4 * 4;
      const int64_t left = K - k;
      const __mmask16 mask = left >= 16 ? __mmask16(0xFFFF) : (left <= 0 ? __mmask16(0) : __mmask16((1u << left) - 1));
      __m512 q = _mm512_div_ps(_mm512_maskz_loadu_ps(mask, r + k), sv);
      q = _mm512_roundscale_ps(q, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      q = _mm512_mask_mov_ps(q, _mm512_cmp_ps_mask(q, q, _CMP_UNORD_Q), _mm512_setzero_ps());
      q = _mm512_min_ps(_mm512_max_ps(q, _mm512_set1_ps(-127.f)), _mm512_set1_ps(127.f));
      __m512i u = _mm512_add_epi32(_mm512_cvtps_epi32(q), _mm512_set1_epi32(128));
      alignas(16) uint32_t d[4];
      _mm_store_si128(reinterpret_cast<__m128i*>(d), _mm512_cvtepi32_epi8(u));
      for (int t = 0; t < 4 && g4 + t < K8 * 2; ++t) std::memcpy(row + (g4 + t) * 64, &d[t], 4);
    }
  }
}
#endif

// A weight's kernel plan, made once per lowered layer: the packed weight's pointers (owned by the
// Python object that holds the plan) and how activations enter.
struct Plan {
  int kind;  // 0 ELL, 1 NM8
  Ell w;
  int64_t K;
  int act;  // 0 float activations, 1 int8 activations (per token, or the fixed scale)
  float act_scale;
  int has_act_scale;
  const uint32_t* meta;  // NM8
  const int32_t* wsum;
  const float* wscale;
};


// DSnoT's swap search for one row (pared/passes/sparsify/dsnot.py has the method and the numpy
// original this follows step for step): w, r = w_dense - w, hr = r H and keep are the row's state,
// updated in place by every swap; returns the number of swaps that moved a mask entry.
//
// N:M rows are searched in a group-major copy of their state (element j of group b at j * G + b),
// so that one vector lane scores one group (AVX-512, eight groups per vector) with no data-
// dependent branches. Scoring a group reads only H's m x m diagonal block of it (Hb); a swap's
// update of hr reads two rows of H in their own order. inv = 1 / dH (0 for dead channels);
// err = r H r^T is carried forward by each swap's exact change instead of recomputed.
struct DsnotLayout {  // shared by the rows of one call, in group-major column order
  int64_t K, G;
  const double* H;          // [K][K], the caller's (not permuted)
  std::vector<double> dH, inv;  // [K], group-major
  std::vector<double> Hb;   // [M][M][G]: Hb[(pi * M + j) * G + b] = H_orig[b * M + pi][b * M + j]
};

template <int M>
static DsnotLayout dsnot_layout(const double* H, const double* dH, int64_t K) {
  DsnotLayout L;
  L.K = K;
  L.G = K / M;
  const int64_t G = L.G;
  L.H = H;
  L.dH.resize(size_t(K));
  L.inv.resize(size_t(K));
  L.Hb.resize(size_t(M * M * G));
  for (int64_t b = 0; b < G; ++b)
    for (int j = 0; j < M; ++j) {
      const double d = dH[b * M + j];
      L.dH[j * G + b] = d;
      L.inv[j * G + b] = std::isfinite(d) ? 1.0 / d : 0.0;
      for (int pi = 0; pi < M; ++pi) L.Hb[(pi * M + j) * G + b] = H[(b * M + pi) * K + b * M + j];
    }
  return L;
}

// The best swap inside group b (pruned pi, grown gi, hg of gi, and its error change), from
// group-major state. Every load is unconditional and every choice a select, so that the loop over
// b vectorises (one group per lane).
struct GroupArrays {
  const double* __restrict dH;
  const double* __restrict inv;
  const double* __restrict Hb;
  int64_t G;
};

template <int M>
static inline double group_total(const double* __restrict ws, const double* __restrict hs,
                                 const double* __restrict ks, const GroupArrays& A, int64_t b, double& pi_out,
                                 double& gi_out, double& hg_out) {
  const int64_t G = A.G;
  const double inf = INFINITY;
  double wv[M], hv[M], kv[M];
  for (int j = 0; j < M; ++j) {
    wv[j] = ws[j * G + b];
    hv[j] = hs[j * G + b];
    kv[j] = ks[j * G + b];
  }
  double cp = inf, pi = -1.0;
  for (int j = 0; j < M; ++j) {
    const double cost = 2.0 * wv[j] * hv[j] + wv[j] * wv[j] * A.dH[j * G + b];
    const double c = kv[j] != 0.0 ? cost : inf;
    const bool lt = c < cp;
    cp = lt ? c : cp;
    pi = lt ? double(j) : pi;
  }
  double s = 0.0;
  for (int j = 0; j < M; ++j) s = pi == double(j) ? wv[j] : s;
  double gain = -inf, gi = -1.0, hgb = 0.0;
  for (int j = 0; j < M; ++j) {
    double hpj = 0.0;
    for (int q = 0; q < M; ++q) {
      const double hq = A.Hb[(q * M + j) * G + b];
      hpj = pi == double(q) ? hq : hpj;
    }
    const double hg = hv[j] + s * hpj;
    const double val = hg * hg * A.inv[j * G + b];
    const double gj = ((kv[j] != 0.0) & (pi != double(j))) ? -inf : val;
    const bool gt = gj > gain;
    gain = gt ? gj : gain;
    gi = gt ? double(j) : gi;
    hgb = gt ? hg : hgb;
  }
  pi_out = pi;
  gi_out = gi;
  hg_out = hgb;
  return ((pi < 0.0) | (gi < 0.0)) ? inf : cp - gain;
}

// The first group with the smallest error change (and that change): group_total over every b,
// eight groups per AVX-512 vector where the build has it (the same arithmetic, lane by lane).
template <int M>
static inline int64_t best_group(const double* __restrict ws, const double* __restrict hs,
                                 const double* __restrict ks, const GroupArrays& A, double& best) {
  const int64_t G = A.G;
  int64_t bb = -1, b = 0;
  best = INFINITY;
  double pi, gi, hg;
#ifdef PARED_AVX512
  const __m512d inf = _mm512_set1_pd(INFINITY), ninf = _mm512_set1_pd(-INFINITY), zero = _mm512_setzero_pd();
  const __m512d two = _mm512_set1_pd(2.0), minus1 = _mm512_set1_pd(-1.0);
  __m512d vbest = inf, vidx = minus1;
  const __m512d step = _mm512_set1_pd(8.0);
  __m512d lane = _mm512_set_pd(7, 6, 5, 4, 3, 2, 1, 0);
  for (; b + 8 <= G; b += 8, lane = _mm512_add_pd(lane, step)) {
    __m512d wv[M], hv[M];
    __mmask8 kv[M];
    __m512d cp = inf, vpi = minus1;
    for (int j = 0; j < M; ++j) {
      wv[j] = _mm512_loadu_pd(ws + j * G + b);
      hv[j] = _mm512_loadu_pd(hs + j * G + b);
      kv[j] = _mm512_cmp_pd_mask(_mm512_loadu_pd(ks + j * G + b), zero, _CMP_NEQ_UQ);
      const __m512d cost = _mm512_add_pd(_mm512_mul_pd(_mm512_mul_pd(two, wv[j]), hv[j]),
                                         _mm512_mul_pd(_mm512_mul_pd(wv[j], wv[j]), _mm512_loadu_pd(A.dH + j * G + b)));
      const __m512d c = _mm512_mask_blend_pd(kv[j], inf, cost);
      const __mmask8 lt = _mm512_cmp_pd_mask(c, cp, _CMP_LT_OQ);
      cp = _mm512_mask_blend_pd(lt, cp, c);
      vpi = _mm512_mask_blend_pd(lt, vpi, _mm512_set1_pd(double(j)));
    }
    __mmask8 isp[M];
    __m512d sv = zero;
    for (int j = 0; j < M; ++j) {
      isp[j] = _mm512_cmp_pd_mask(vpi, _mm512_set1_pd(double(j)), _CMP_EQ_OQ);
      sv = _mm512_mask_blend_pd(isp[j], sv, wv[j]);
    }
    __m512d gain = ninf, vgi = minus1, vhg = zero;
    for (int j = 0; j < M; ++j) {
      __m512d hpj = zero;
      for (int q = 0; q < M; ++q) hpj = _mm512_mask_blend_pd(isp[q], hpj, _mm512_loadu_pd(A.Hb + (q * M + j) * G + b));
      const __m512d h = _mm512_add_pd(hv[j], _mm512_mul_pd(sv, hpj));
      const __m512d val = _mm512_mul_pd(_mm512_mul_pd(h, h), _mm512_loadu_pd(A.inv + j * G + b));
      const __m512d gj = _mm512_mask_blend_pd(kv[j] & __mmask8(~isp[j]), val, ninf);
      const __mmask8 gt = _mm512_cmp_pd_mask(gj, gain, _CMP_GT_OQ);
      gain = _mm512_mask_blend_pd(gt, gain, gj);
      vgi = _mm512_mask_blend_pd(gt, vgi, _mm512_set1_pd(double(j)));
      vhg = _mm512_mask_blend_pd(gt, vhg, h);
    }
    const __mmask8 none = _mm512_cmp_pd_mask(vpi, zero, _CMP_LT_OQ) | _mm512_cmp_pd_mask(vgi, zero, _CMP_LT_OQ);
    const __m512d tot = _mm512_mask_blend_pd(none, _mm512_sub_pd(cp, gain), inf);
    const __mmask8 lt = _mm512_cmp_pd_mask(tot, vbest, _CMP_LT_OQ);  // strict: each lane keeps its first minimum
    vbest = _mm512_mask_blend_pd(lt, vbest, tot);
    vidx = _mm512_mask_blend_pd(lt, vidx, lane);
  }
  alignas(64) double lb[8], li[8];
  _mm512_store_pd(lb, vbest);
  _mm512_store_pd(li, vidx);
  for (int l = 0; l < 8; ++l)  // the smallest value; among equal ones the first group
    if (li[l] >= 0.0 && (lb[l] < best || (lb[l] == best && int64_t(li[l]) < bb))) { best = lb[l]; bb = int64_t(li[l]); }
#endif
  for (; b < G; ++b) {
    const double t = group_total<M>(ws, hs, ks, A, b, pi, gi, hg);
    if (t < best) { best = t; bb = b; }
  }
  return bb;
}

template <int M>
static int64_t dsnot_row_nm(const DsnotLayout& L, int cycles, int settle, double* w, double* r, double* hr,
                            uint8_t* keep) {
  const int64_t K = L.K, G = L.G;
  const GroupArrays A{L.dH.data(), L.inv.data(), L.Hb.data(), G};
  std::vector<double> state(size_t(3 * K));
  double* __restrict ws = state.data();
  double* __restrict hs = ws + K;
  double* __restrict ks = hs + K;
  for (int64_t b = 0; b < G; ++b)
    for (int j = 0; j < M; ++j) {
      ws[j * G + b] = w[b * M + j];
      hs[j * G + b] = hr[b * M + j];
      ks[j * G + b] = keep[b * M + j] ? 1.0 : 0.0;
    }
  int64_t swaps = 0;
  int idle = 0;
  double err = 0.0;
  for (int64_t j = 0; j < K; ++j) err += r[j] * hr[j];
  double pi, gi, hg, best;
  int64_t bb = best_group<M>(ws, hs, ks, A, best);
  for (int c = 0; c < cycles; ++c) {
    if (bb < 0 || !std::isfinite(best) || !(best < -1e-12 * (1.0 + std::fabs(err)))) break;  // this row is final
    group_total<M>(ws, hs, ks, A, bb, pi, gi, hg);
    const int64_t p = int64_t(pi) * G + bb, g = int64_t(gi) * G + bb;  // group-major positions
    const double s = ws[p], t = hg * A.inv[g];
    err += best;
    ws[p] = 0.0; ks[p] = 0.0;
    ws[g] += t; ks[g] = 1.0;
    r[bb * M + int64_t(pi)] += s; r[bb * M + int64_t(gi)] -= t;
    const double* __restrict Hp = L.H + (bb * M + int64_t(pi)) * K;
    const double* __restrict Hg = L.H + (bb * M + int64_t(gi)) * K;
    for (int j = 0; j < M; ++j) {
      double* __restrict hj = hs + j * G;
#pragma omp simd
      for (int64_t b = 0; b < G; ++b) hj[b] += s * Hp[b * M + j] - t * Hg[b * M + j];
    }
    bool stop = false;
    if (p != g) { ++swaps; idle = 0; } else stop = settle > 0 && ++idle >= settle;
    if (stop || c + 1 == cycles) break;
    bb = best_group<M>(ws, hs, ks, A, best);
  }
  for (int64_t b = 0; b < G; ++b)
    for (int j = 0; j < M; ++j) {
      w[b * M + j] = ws[j * G + b];
      hr[b * M + j] = hs[j * G + b];
      keep[b * M + j] = ks[j * G + b] != 0.0;
    }
  return swaps;
}

static int64_t dsnot_row_free(const double* H, const double* dH, const double* inv, int64_t K, int cycles, int settle,
                              double* w, double* r, double* hr, uint8_t* keep) {
  const double inf = INFINITY;
  int64_t swaps = 0;
  int idle = 0;
  double err = 0.0;
  for (int64_t j = 0; j < K; ++j) err += r[j] * hr[j];
  // cost of pruning each kept weight, fused into the update pass of the previous swap
  int64_t p = -1;
  double cp = inf;
  for (int64_t j = 0; j < K; ++j) {
    const double c = keep[j] ? 2.0 * w[j] * hr[j] + w[j] * w[j] * dH[j] : inf;
    const bool lt = c < cp;
    cp = lt ? c : cp;
    p = lt ? j : p;
  }
  for (int c = 0; c < cycles; ++c) {
    if (p < 0) break;
    const double s = w[p];
    const double* Hp = H + p * K;
    int64_t g = -1;
    double gain = -inf, t = 0.0;
    for (int64_t j = 0; j < K; ++j) {
      const double hg = hr[j] + s * Hp[j];
      const double gj = (keep[j] && j != p) ? -inf : hg * hg * inv[j];
      const bool gt = gj > gain;
      gain = gt ? gj : gain;
      g = gt ? j : g;
      t = gt ? hg : t;
    }
    const double total = cp - gain;
    if (g < 0 || !std::isfinite(total) || !(total < -1e-12 * (1.0 + std::fabs(err)))) break;
    t *= inv[g];
    err += total;
    w[p] = 0.0; keep[p] = 0;
    w[g] += t; keep[g] = 1;
    r[p] += s; r[g] -= t;
    const double* Hg = H + g * K;
    bool stop = false;
    if (p != g) { ++swaps; idle = 0; } else stop = settle > 0 && ++idle >= settle;
    p = -1;
    cp = inf;
    for (int64_t j = 0; j < K; ++j) {
      const double h = hr[j] + (s * Hp[j] - t * Hg[j]);
      hr[j] = h;
      const double cj = keep[j] ? 2.0 * w[j] * h + w[j] * w[j] * dH[j] : inf;
      const bool lt = cj < cp;
      cp = lt ? cj : cp;
      p = lt ? j : p;
    }
    if (stop) break;
  }
  return swaps;
}

}  // namespace

extern "C" {

// Bit 0: the AVX-512 gather paths; bit 1: the NM8 int8 kernel (AVX512-VBMI + VNNI).
int pared_cpu_features() {
  int f = 0;
#ifdef PARED_AVX512
  f |= 1;
#endif
#ifdef PARED_NM8
  f |= 2;
#endif
  return f;
}

// An ELL weight (see the top of this file); act: 0 float activations, 1 per-token int8
// activations quantized in the kernel (act_scale: a fixed per-tensor scale, or null).
void* pared_plan_ell(const uint16_t* cols, const void* vals, int vtype, int64_t N, int64_t K, int64_t F, int64_t P,
                     const float* scales, const float* zeros, int contiguous, int act, const float* act_scale) {
  Plan* p = new Plan();
  p->kind = 0;
  p->w = Ell{cols, vals, vtype, N, F, P, scales, zeros, nullptr, contiguous};
  p->K = K;
  p->act = act;
  p->has_act_scale = act_scale != nullptr;
  p->act_scale = act_scale ? *act_scale : 1.f;
  return p;
}

// A W8A8 weight keeping 4 of every 8 columns: meta [ceil(N / 8)][ceil(K / 8)][8][sel, w] (u32),
// wsum [N] (each row's int8 sum), wscale [N]. Null when this build has no NM8 kernel.
void* pared_plan_nm8(const uint32_t* meta, const int32_t* wsum, const float* wscale, int64_t N, int64_t K,
                     const float* act_scale) {
#ifdef PARED_NM8
  Plan* p = new Plan();
  p->kind = 1;
  p->w = Ell{nullptr, nullptr, 0, N, 0, 1, nullptr, nullptr, nullptr, 0};
  p->K = K;
  p->act = 1;
  p->has_act_scale = act_scale != nullptr;
  p->act_scale = act_scale ? *act_scale : 1.f;
  p->meta = meta;
  p->wsum = wsum;
  p->wscale = wscale;
  return p;
#else
  (void)meta; (void)wsum; (void)wscale; (void)N; (void)K; (void)act_scale;
  return nullptr;
#endif
}

void pared_plan_free(void* plan) { delete static_cast<Plan*>(plan); }

// y[M, N] = x[M, K] . W^T (+ bias), x and y contiguous f32. algo: -1 by M, 0 gemv, 1 gemm with
// 16-row blocks, 2 gemm with 64-row blocks (ELL plans).
int pared_run(const void* plan, const float* x, int64_t M, const float* bias, float* y, int algo, int nthreads) {
  const Plan& p = *static_cast<const Plan*>(plan);
  const int64_t K = p.K, N = p.w.N;
  const float* fixed = p.has_act_scale ? &p.act_scale : nullptr;
  if (M <= 0) return 0;
#ifdef PARED_NM8
  if (p.kind == 1) {
    const int64_t K8 = (K + 7) / 8, Mp = (M + 15) / 16 * 16;
    std::vector<float> xs(static_cast<size_t>(Mp));
    AlignedBuffer<uint8_t> XQ(size_t(Mp) * K8 * 8 + 64);
    nm8_pack_x(x, M, K, K, K8, fixed, XQ.data(), xs.data(), nthreads);
    nm8_gemm(XQ.data(), Mp, K8, p.meta, p.wsum, p.wscale, bias, xs.data(), M, N, y, N, nthreads);
    return 0;
  }
#endif
  if (p.kind != 0) return 2;
  Ell w = p.w;
  w.bias = bias;
  if (w.F <= 0) {
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) y[m * N + n] = bias ? bias[n] : 0.f;
    return 0;
  }
  if (w.F % w.P) return 1;
  std::vector<float> xq, xs;
  const float* xin = x;
  const float* xscale = nullptr;
  if (p.act) {
    xq.resize(size_t(M) * K);
    xs.resize(size_t(M));
    quantize_rows(x, M, K, K, xq.data(), xs.data(), fixed);
    xin = xq.data();
    xscale = xs.data();
  }
  if (algo < 0) algo = M <= 2 ? 0 : (M <= 24 ? 1 : 2);
  if (algo == 0)
    ell_gemv(w, xin, M, K, xscale, y, N, nthreads);
  else if (algo == 1)
    ell_gemm<16>(w, xin, M, K, K, xscale, y, N, nthreads);
  else
    ell_gemm<32>(w, xin, M, K, K, xscale, y, N, nthreads);
  return 0;
}

// DSnoT over `rows` independent rows (row-major [rows, K] float64 w, r, hr; uint8 keep), in
// place; m = 0 for unstructured masks. Returns the total number of swaps.
int64_t pared_dsnot(const double* H, const double* dH, int64_t rows, int64_t K, int m, int cycles, int settle,
                    double* w, double* r, double* hr, uint8_t* keep, int nthreads) {
  int64_t total = 0;
  if (m == 4 || m == 8) {
    const DsnotLayout L = m == 4 ? dsnot_layout<4>(H, dH, K) : dsnot_layout<8>(H, dH, K);
#pragma omp parallel for schedule(dynamic, 4) num_threads(nthreads) reduction(+ : total)
    for (int64_t i = 0; i < rows; ++i)
      total += m == 4 ? dsnot_row_nm<4>(L, cycles, settle, w + i * K, r + i * K, hr + i * K, keep + i * K)
                      : dsnot_row_nm<8>(L, cycles, settle, w + i * K, r + i * K, hr + i * K, keep + i * K);
    return total;
  }
  if (m > 0) return -1;  // other group sizes: the caller runs the numpy loop
  std::vector<double> inv(static_cast<size_t>(K));
  for (int64_t j = 0; j < K; ++j) inv[j] = std::isfinite(dH[j]) ? 1.0 / dH[j] : 0.0;
#pragma omp parallel for schedule(dynamic, 4) num_threads(nthreads) reduction(+ : total)
  for (int64_t i = 0; i < rows; ++i)
    total += dsnot_row_free(H, dH, inv.data(), K, cycles, settle, w + i * K, r + i * K, hr + i * K, keep + i * K);
  return total;
}

}  // extern "C"
