// initkit's own float32 GEMM for AVX-512 and AVX2 + FMA CPUs, the third engine of dense_gemm.h:
//   c [M, N] = a [M, K] @ b [N, K].T (+ bias).
// b is first packed into panels of 32 of its rows, k-major (panel p holds b[32p + j, k] at
// [p][k][j], zero-padded past N); a 6x32 register tile then accumulates 6 rows of a against one
// panel (12 AVX-512 accumulators, two panel loads and six broadcasts per k; on AVX2, 6x16 on each
// half of the panel, with the same 12 accumulators and the same sums, so the same bits). Small and medium
// layers are where it pays: MKL and oneDNN spend fixed costs per call (threading, primitive
// lookup) that are as large as the arithmetic at 64x256x256, and inference reuses the packed
// panels while the weight is unchanged (dense_gemm.h's pack cache). Results round like any
// blocked GEMM (k summed in order, per output), not bit-identically to MKL or oneDNN.
#pragma once
#include <ATen/ATen.h>

#include <optional>

namespace initkit {
namespace cpu {

// Whether this CPU runs the kernel (AVX-512F, or AVX2 and FMA, unless INITKIT_CPU_KERNELS=portable;
// checked once at run time, so a default build still runs on any x86-64).
bool own_gemm_available();

// Whether own_gemm takes these operands: float32 a and b (any strides), bias contiguous.
bool own_gemm_usable(const at::Tensor& a, const at::Tensor& b, const std::optional<at::Tensor>& bias);

// b [N, K] float32, any strides -> the panels [ceil(N / 32), K, 32].
at::Tensor pack_gemm_panels(const at::Tensor& b);

// relu?(a [M, K] @ (panels of b [n, K]).T + bias) -> contiguous [M, n]. The ReLU keeps NaN and -0.0,
// as F.relu does.
at::Tensor own_gemm(const at::Tensor& a, const at::Tensor& panels, int64_t n, const std::optional<at::Tensor>& bias,
                    bool relu);

// A whole ReLU MLP (ReLU after every layer but the last) on packed panels: layer l has panels[l]
// (of a weight [outs[l], K_l]) and biases[l] (contiguous float32, or undefined). The rows of a are
// cut into blocks, one task each, and a task takes its block through every layer: row r of layer
// l + 1 needs only row r of layer l, so there is one parallel region and no barrier between
// layers, the block's activations stay in cache, and a narrow last layer idles no thread. Each
// output is summed exactly as own_gemm sums it: the same bits as own_gemm layer by layer.
at::Tensor own_mlp(const at::Tensor& a, at::TensorList panels, c10::ArrayRef<int64_t> outs, at::TensorList biases);

}  // namespace cpu
}  // namespace initkit
