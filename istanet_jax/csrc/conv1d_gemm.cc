// 1-D convolutions of channels-last arrays as a few large GEMMs on the caller's BLAS.
//
// x is viewed as (P, L, R, I): P independent sequences of length L along the convolved axis,
// R rows per position, I channels. y[p, l, r] = sum_j x[p, l + j - pad, r] @ w[j], zero outside
// [0, L), pad = (k - 1) / 2. Each shift j is ONE GEMM over all P*L*R rows, reading x at a row
// offset (no shifted copy, no im2col); rows whose shifted source fell into the neighbouring
// sequence are then corrected by one small GEMM over just those rows (|s| * R per sequence).
// The weight gradient is the same walk with the reduction over rows.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

enum { kRowMajor = 101, kNoTrans = 111, kTrans = 112 };
using SgemmIlp64 = void (*)(int, int, int, int64_t, int64_t, int64_t, float, const float*,
                            int64_t, const float*, int64_t, float, float*, int64_t);
using SgemmLp64 = void (*)(int, int, int, int32_t, int32_t, int32_t, float, const float*,
                           int32_t, const float*, int32_t, float, float*, int32_t);
void* g_sgemm = nullptr;
bool g_ilp64 = true;

void Sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
           const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
           int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) {  // BLAS would leave c alone for beta == 1 only; be explicit.
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == 0.f ? 0.f : beta * c[i * ldc + j];
    return;
  }
  int ta = trans_a ? kTrans : kNoTrans, tb = trans_b ? kTrans : kNoTrans;
  if (g_ilp64) {
    reinterpret_cast<SgemmIlp64>(g_sgemm)(kRowMajor, ta, tb, m, n, k, alpha, a, lda, b, ldb,
                                          beta, c, ldc);
  } else {
    reinterpret_cast<SgemmLp64>(g_sgemm)(kRowMajor, ta, tb, m, n, k, alpha, a, lda, b, ldb,
                                         beta, c, ldc);
  }
}

struct Shift {
  int64_t begin, end;  // output rows [begin, end) of the full-range GEMM
  int64_t offset;      // source row = output row + offset
  std::vector<int64_t> wrong;  // output rows in [begin, end) whose source is another sequence
};

Shift MakeShift(int64_t p, int64_t l, int64_t r, int64_t s) {
  Shift sh;
  int64_t total = p * l * r;
  sh.offset = s * r;
  sh.begin = std::max<int64_t>(0, -sh.offset);
  sh.end = total - std::max<int64_t>(0, sh.offset);
  if (s == 0) return sh;
  for (int64_t q = 0; q < p; ++q) {
    // Positions whose source l + s lies outside [0, L) but whose global row is in range.
    int64_t lo = s > 0 ? std::max<int64_t>(l - s, 0) : 0;
    int64_t hi = s > 0 ? l : std::min<int64_t>(-s, l);
    for (int64_t pos = lo; pos < hi; ++pos) {
      for (int64_t row = 0; row < r; ++row) {
        int64_t g = (q * l + pos) * r + row;
        if (g >= sh.begin && g < sh.end) sh.wrong.push_back(g);
      }
    }
  }
  return sh;
}

ffi::Error CheckReady(int64_t k) {
  if (g_sgemm == nullptr) return ffi::Error::InvalidArgument("istanet conv1d: no BLAS sgemm set");
  if (k % 2 == 0) return ffi::Error::InvalidArgument("istanet conv1d: kernel size must be odd");
  return ffi::Error::Success();
}

// x (P, L, R, I), w (k, I, O) -> y (P, L, R, O).
ffi::Error Conv1dImpl(ffi::Buffer<ffi::F32, 4> x, ffi::Buffer<ffi::F32, 3> w,
                      ffi::ResultBuffer<ffi::F32, 4> y) {
  auto xd = x.dimensions();
  auto wd = w.dimensions();
  int64_t p = xd[0], l = xd[1], r = xd[2], in = xd[3], k = wd[0], out = wd[2];
  if (auto e = CheckReady(k); e.failure()) return e;
  if (wd[1] != in) return ffi::Error::InvalidArgument("istanet conv1d: channel mismatch");
  const float* xp = x.typed_data();
  const float* wp = w.typed_data();
  float* yp = y->typed_data();
  int64_t pad = (k - 1) / 2;
  Sgemm(false, false, p * l * r, out, in, 1.f, xp, in, wp + pad * in * out, out, 0.f, yp, out);
  std::vector<float> tx, ty;
  for (int64_t j = 0; j < k; ++j) {
    if (j == pad) continue;
    Shift sh = MakeShift(p, l, r, j - pad);
    const float* wj = wp + j * in * out;
    Sgemm(false, false, sh.end - sh.begin, out, in, 1.f, xp + (sh.begin + sh.offset) * in, in,
          wj, out, 1.f, yp + sh.begin * out, out);
    int64_t m = sh.wrong.size();
    if (m == 0) continue;
    tx.resize(m * in);
    ty.resize(m * out);
    for (int64_t i = 0; i < m; ++i)
      std::memcpy(&tx[i * in], xp + (sh.wrong[i] + sh.offset) * in, in * sizeof(float));
    Sgemm(false, false, m, out, in, 1.f, tx.data(), in, wj, out, 0.f, ty.data(), out);
    for (int64_t i = 0; i < m; ++i) {
      float* row = yp + sh.wrong[i] * out;
      const float* fix = &ty[i * out];
      for (int64_t c = 0; c < out; ++c) row[c] -= fix[c];
    }
  }
  return ffi::Error::Success();
}

// x (P, L, R, I), dy (P, L, R, O) -> dw (k, I, O), dw[j] = sum of x[l + j - pad]^T dy[l].
ffi::Error Conv1dWeightGradImpl(ffi::Buffer<ffi::F32, 4> x, ffi::Buffer<ffi::F32, 4> dy,
                                ffi::ResultBuffer<ffi::F32, 3> dw) {
  auto xd = x.dimensions();
  auto wd = dw->dimensions();
  int64_t p = xd[0], l = xd[1], r = xd[2], in = xd[3], k = wd[0], out = wd[2];
  if (auto e = CheckReady(k); e.failure()) return e;
  const float* xp = x.typed_data();
  const float* dyp = dy.typed_data();
  float* dwp = dw->typed_data();
  int64_t pad = (k - 1) / 2;
  std::vector<float> tx, tdy;
  for (int64_t j = 0; j < k; ++j) {
    Shift sh = MakeShift(p, l, r, j - pad);
    float* dwj = dwp + j * in * out;
    Sgemm(true, false, in, out, sh.end - sh.begin, 1.f, xp + (sh.begin + sh.offset) * in, in,
          dyp + sh.begin * out, out, 0.f, dwj, out);
    int64_t m = sh.wrong.size();
    if (m == 0) continue;
    tx.resize(m * in);
    tdy.resize(m * out);
    for (int64_t i = 0; i < m; ++i) {
      std::memcpy(&tx[i * in], xp + (sh.wrong[i] + sh.offset) * in, in * sizeof(float));
      std::memcpy(&tdy[i * out], dyp + sh.wrong[i] * out, out * sizeof(float));
    }
    Sgemm(true, false, in, out, m, -1.f, tx.data(), in, tdy.data(), out, 1.f, dwj, out);
  }
  return ffi::Error::Success();
}

using Rows = ffi::Buffer<ffi::F32, 4>;     // (P, L, R, C)
using Kernel = ffi::Buffer<ffi::F32, 3>;   // (k, I, O)

}  // namespace

extern "C" void IstanetSetSgemm(void* sgemm, int ilp64) {
  g_sgemm = sgemm;
  g_ilp64 = ilp64 != 0;
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(IstanetConv1d, Conv1dImpl,
                              ffi::Ffi::Bind()
                                  .Arg<Rows>()
                                  .Arg<Kernel>()
                                  .Ret<Rows>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(IstanetConv1dWeightGrad, Conv1dWeightGradImpl,
                              ffi::Ffi::Bind()
                                  .Arg<Rows>()
                                  .Arg<Rows>()
                                  .Ret<Kernel>());
