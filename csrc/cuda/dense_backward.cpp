// CUDA kernels of initkit::_linear_relu_backward and initkit::_mlp_backward on cuBLASLt
// epilogues, as apex's fused_dense does (compiled only in CUDA builds; other devices use the
// ATen math in autograd/):
//   - every weight-gradient GEMM runs with the BGRADB epilogue: the bias gradient (the column
//     sums of the pre-activation gradient, the GEMM's reduction operand) comes out of the same
//     GEMM instead of a separate reduction;
//   - in _mlp_backward, layer i's input-gradient GEMM (grad @ W_i) runs with DRELU_BGRAD: the
//     ReLU gradient of layer i-1 (mask h_{i-1} > 0, given to cuBLASLt as its ReLU bitmask) and
//     layer i-1's bias gradient are applied to the GEMM's output in its epilogue.
// cuBLASLt is column-major: a row-major [r, c] tensor is a column-major c x r matrix, so
// row-major C = A @ B is computed as C^T = B^T A^T. Where cuBLASLt offers no algorithm for a
// shape (or for float64), the ATen ops give the same result.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cublasLt.h>
#include <torch/library.h>

#include <array>
#include <optional>
#include <tuple>
#include <vector>

#include "../common/linear_checks.h"

namespace initkit {
namespace {

using OptionalTensor = std::optional<at::Tensor>;

#define INITKIT_LT_CHECK(expr)                                                                 \
  do {                                                                                         \
    const cublasStatus_t status = (expr);                                                      \
    TORCH_CHECK(status == CUBLAS_STATUS_SUCCESS, "initkit: cuBLASLt call failed: " #expr " -> ", \
                cublasGetStatusString(status));                                                \
  } while (0)

std::optional<cudaDataType_t> lt_dtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return CUDA_R_32F;
    case at::kHalf: return CUDA_R_16F;
    case at::kBFloat16: return CUDA_R_16BF;
    default: return std::nullopt;
  }
}

// Owns the cuBLASLt descriptors of one call.
struct LtDescs {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  ~LtDescs() {
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (d) cublasLtMatrixLayoutDestroy(d);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

// Column-major D [m, n] (ld ldd) = op(A) [m, k] @ op(B) [k, n] with `epilogue`; bias / aux as the
// epilogue needs them. False (nothing written) when cuBLASLt has no algorithm for it.
bool lt_matmul(cublasOperation_t ta, cublasOperation_t tb, int64_t m, int64_t n, int64_t k, const void* a,
               int64_t lda, const void* b, int64_t ldb, void* d, int64_t ldd, cudaDataType_t type,
               cublasLtEpilogue_t epilogue, void* bias, const void* aux, int64_t aux_ld) {
  LtDescs descs;
  INITKIT_LT_CHECK(cublasLtMatmulDescCreate(&descs.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  INITKIT_LT_CHECK(cublasLtMatmulDescSetAttribute(descs.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
  INITKIT_LT_CHECK(cublasLtMatmulDescSetAttribute(descs.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
  INITKIT_LT_CHECK(cublasLtMatmulDescSetAttribute(descs.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)));
  if (bias != nullptr) {
    INITKIT_LT_CHECK(cublasLtMatmulDescSetAttribute(descs.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
  }
  if (aux != nullptr) {
    INITKIT_LT_CHECK(cublasLtMatmulDescSetAttribute(descs.op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, sizeof(aux)));
    INITKIT_LT_CHECK(cublasLtMatmulDescSetAttribute(descs.op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &aux_ld, sizeof(aux_ld)));
  }
  const bool ta_n = ta == CUBLAS_OP_N, tb_n = tb == CUBLAS_OP_N;
  INITKIT_LT_CHECK(cublasLtMatrixLayoutCreate(&descs.a, type, ta_n ? m : k, ta_n ? k : m, lda));
  INITKIT_LT_CHECK(cublasLtMatrixLayoutCreate(&descs.b, type, tb_n ? k : n, tb_n ? n : k, ldb));
  INITKIT_LT_CHECK(cublasLtMatrixLayoutCreate(&descs.d, type, m, n, ldd));
  size_t workspace_size = at::cuda::getCUDABlasLtWorkspaceSize();
  void* workspace = at::cuda::getCUDABlasLtWorkspace();
  INITKIT_LT_CHECK(cublasLtMatmulPreferenceCreate(&descs.pref));
  INITKIT_LT_CHECK(cublasLtMatmulPreferenceSetAttribute(descs.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                        &workspace_size, sizeof(workspace_size)));
  cublasLtHandle_t handle = at::cuda::getCurrentCUDABlasLtHandle();
  cublasLtMatmulHeuristicResult_t heuristic = {};
  int found = 0;
  const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(handle, descs.op, descs.a, descs.b, descs.d, descs.d,
                                                               descs.pref, 1, &heuristic, &found);
  if (status != CUBLAS_STATUS_SUCCESS || found == 0) return false;
  const float one = 1.0f, zero = 0.0f;
  INITKIT_LT_CHECK(cublasLtMatmul(handle, descs.op, &one, a, descs.a, b, descs.b, &zero, d, descs.d, d, descs.d,
                                  &heuristic.algo, workspace, workspace_size, at::cuda::getCurrentCUDAStream()));
  return true;
}

// Row-major grad_weight [N, K] = grad_pre^T [N, M] @ x [M, K], and grad_bias [N] = column sums
// of grad_pre (BGRADB). Column-major: gw^T [K, N] = x^T [K, M] @ grad_pre [M, N] with A = x
// (K x M, ld K) and B = op_T(grad_pre stored N x M, ld N); BGRADB reduces B over k = M.
bool weight_and_bias_grad(const at::Tensor& grad_pre, const at::Tensor& x, at::Tensor& grad_weight,
                          at::Tensor* grad_bias) {
  const auto type = lt_dtype(x.scalar_type());
  if (!type) return false;
  const int64_t rows = x.size(0), ins = x.size(1), outs = grad_pre.size(1);
  return lt_matmul(CUBLAS_OP_N, CUBLAS_OP_T, ins, outs, rows, x.data_ptr(), ins, grad_pre.data_ptr(), outs,
                   grad_weight.data_ptr(), ins, *type, grad_bias ? CUBLASLT_EPILOGUE_BGRADB : CUBLASLT_EPILOGUE_DEFAULT,
                   grad_bias ? grad_bias->data_ptr() : nullptr, nullptr, 0);
}

// cuBLASLt's ReLU bitmask of h [M, W] (row-major; column-major W x M): bit r of column c, LSB
// first, is h[c, r] > 0; columns are aux_ld bits apart (aux_ld: W rounded up to 128).
std::pair<at::Tensor, int64_t> relu_bitmask(const at::Tensor& h) {
  const int64_t rows = h.size(0), width = h.size(1);
  const int64_t aux_ld = (width + 127) / 128 * 128;
  at::Tensor positive = at::zeros({rows, aux_ld}, h.options().dtype(at::kByte));
  positive.narrow(1, 0, width).copy_(h.gt(0));
  const std::array<uint8_t, 8> bits = {1, 2, 4, 8, 16, 32, 64, 128};
  const at::Tensor bit_values = at::tensor(at::ArrayRef<uint8_t>(bits.data(), bits.size())).to(h.device());
  at::Tensor mask = positive.view({rows, aux_ld / 8, 8}).mul(bit_values).sum(-1, /*keepdim=*/false, at::kByte);
  return {mask.contiguous(), aux_ld};
}

// Row-major grad_h [M, W] = relu'(h) * (grad [M, N] @ w [N, W]) and bias_grad [W] = its column
// sums (DRELU_BGRAD). Column-major: grad_h^T [W, M] = w^T [W, N] @ grad^T [N, M]: A = w stored
// W x N (ld W), B = grad stored N x M (ld N).
bool input_grad_through_relu(const at::Tensor& grad, const at::Tensor& w, const at::Tensor& h, at::Tensor& grad_h,
                             at::Tensor& bias_grad) {
  const auto type = lt_dtype(grad.scalar_type());
  if (!type) return false;
  const int64_t rows = grad.size(0), outs = w.size(0), width = w.size(1);
  const auto [mask, aux_ld] = relu_bitmask(h);
  return lt_matmul(CUBLAS_OP_N, CUBLAS_OP_N, width, rows, outs, w.data_ptr(), width, grad.data_ptr(), outs,
                   grad_h.data_ptr(), width, *type, CUBLASLT_EPILOGUE_DRELU_BGRAD, bias_grad.data_ptr(), mask.data_ptr(),
                   aux_ld);
}

std::tuple<OptionalTensor, OptionalTensor, OptionalTensor> linear_relu_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& out, const at::Tensor& input, const at::Tensor& weight,
    std::array<bool, 3> output_mask) {
  check_linear_backward_args("initkit::_linear_relu_backward", grad_out, out, input, weight);
  const c10::cuda::CUDAGuard guard(input.device());
  const int64_t outs = weight.size(0), ins = weight.size(1), rows = leading_rows(input);
  const at::Tensor grad_pre = at::threshold_backward(grad_out, out, 0).reshape({rows, outs}).contiguous();
  OptionalTensor grad_input, grad_weight, grad_bias;
  if (output_mask[0]) grad_input = grad_pre.mm(weight).view(input.sizes());
  if (output_mask[1]) {
    const at::Tensor x = input.reshape({rows, ins}).contiguous();
    at::Tensor gw = at::empty({outs, ins}, weight.options());
    at::Tensor gb = at::empty({outs}, weight.options());
    if (rows > 0 && weight_and_bias_grad(grad_pre, x, gw, output_mask[2] ? &gb : nullptr)) {
      grad_weight = gw;
      if (output_mask[2]) grad_bias = gb;
    } else {
      grad_weight = grad_pre.t().mm(x);
    }
  }
  if (output_mask[2] && !grad_bias.has_value()) grad_bias = grad_pre.sum(0);
  return {grad_input, grad_weight, grad_bias};
}

std::tuple<OptionalTensor, std::vector<at::Tensor>, std::vector<at::Tensor>> mlp_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& input, at::TensorList weights,
    const c10::List<OptionalTensor>& biases, at::TensorList hidden, bool input_grad) {
  check_mlp_backward_args("initkit::_mlp_backward", grad_out, input, weights, biases, hidden);
  const c10::cuda::CUDAGuard guard(input.device());
  const size_t layers = weights.size();
  const int64_t rows = leading_rows(input);
  const auto present = [&](size_t i) { return biases.get(i).has_value() && biases.get(i)->defined(); };
  std::vector<at::Tensor> grad_weights(layers);
  std::vector<OptionalTensor> grad_bias_of(layers);
  // Gradient of layer i's pre-activation; its bias gradient may already be known (DRELU_BGRAD).
  at::Tensor grad = grad_out.reshape({rows, weights[layers - 1].size(0)}).contiguous();
  OptionalTensor pending_bias_grad;
  OptionalTensor grad_input;
  for (size_t i = layers; i-- > 0;) {
    const at::Tensor layer_input = i == 0 ? input.reshape({rows, input.size(-1)}).contiguous() : hidden[i - 1].contiguous();
    const bool want_bias = present(i) && !pending_bias_grad.has_value();
    at::Tensor gw = at::empty_like(weights[i], at::MemoryFormat::Contiguous);
    at::Tensor gb = at::empty({weights[i].size(0)}, weights[i].options());
    if (rows > 0 && weight_and_bias_grad(grad, layer_input, gw, want_bias ? &gb : nullptr)) {
      grad_weights[i] = gw;
      if (want_bias) pending_bias_grad = gb;
    } else {
      grad_weights[i] = grad.t().mm(layer_input);
      if (want_bias) pending_bias_grad = grad.sum(0);
    }
    if (present(i)) grad_bias_of[i] = pending_bias_grad;
    pending_bias_grad.reset();
    if (i > 0) {
      const at::Tensor w = weights[i].contiguous();
      at::Tensor grad_h = at::empty({rows, w.size(1)}, grad.options());
      at::Tensor bias_grad = at::empty({w.size(1)}, grad.options());
      if (rows > 0 && input_grad_through_relu(grad, w, hidden[i - 1].contiguous(), grad_h, bias_grad)) {
        if (present(i - 1)) pending_bias_grad = bias_grad;
        grad = grad_h;
      } else {
        grad = at::threshold_backward(grad.mm(w), hidden[i - 1], 0);
      }
    } else if (input_grad) {
      grad_input = grad.mm(weights[0]).view(input.sizes());
    }
  }
  std::vector<at::Tensor> grad_biases;
  for (size_t i = 0; i < layers; ++i) {
    if (grad_bias_of[i].has_value()) grad_biases.push_back(*grad_bias_of[i]);
  }
  return {grad_input, grad_weights, grad_biases};
}

}  // namespace
}  // namespace initkit

TORCH_LIBRARY_IMPL(initkit, CUDA, m) {
  m.impl("_linear_relu_backward", &initkit::linear_relu_backward_cuda);
  m.impl("_mlp_backward", &initkit::mlp_backward_cuda);
}
