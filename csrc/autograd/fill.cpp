// The fills as in-place ops for autograd, one boxed kernel per dispatch key for all four ops
// (uniform_fill, normal_fill, trunc_normal_fill, multi_fill, _philox_fill: argument 0 is what
// they write).
//
// ADInplaceOrView: bumps the version counter of every written tensor after the write, so that
// autograd sees a saved tensor being overwritten (backward then raises, as after torch's own
// in-place ops) and a refused call (bad parameters, an expanded tensor) leaves it as it was. An
// inference tensor written outside InferenceMode raises torch's error before anything is written.
//
// Autograd: in grad mode, a leaf that requires grad (or a view of one) raises torch's
// in-place error. A non-leaf that requires grad raises too: torch would give the filled tensor
// a zero gradient towards its history, which is never what an initializer call means; fill
// under torch.no_grad() (as every initkit.init function does) or fill a detached tensor.
// Forward AD: a written tensor's tangent is zeroed in place, as torch's random fills do
// (derivatives.yaml, normal_: `result: self_t.zero_()`).
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/VariableTypeUtils.h>
#include <torch/library.h>

#include <vector>

namespace initkit {
namespace {

std::vector<at::Tensor> written_tensors(const c10::OperatorHandle& op, const torch::jit::Stack* stack) {
  const c10::IValue& target = (*stack)[stack->size() - op.schema().arguments().size()];
  if (target.isTensor()) return {target.toTensor()};
  return target.toTensorList().vec();
}

void fill_autograd(const c10::OperatorHandle& op, c10::DispatchKeySet keys, torch::jit::Stack* stack) {
  const bool grad_mode = at::GradMode::is_enabled();
  const std::vector<at::Tensor> written = written_tensors(op, stack);
  for (const at::Tensor& t : written) {
    const bool requires_grad = grad_mode && t.requires_grad();
    torch::autograd::check_inplace(t, requires_grad);  // torch's errors for leaves and their views
    TORCH_CHECK(!requires_grad, op.schema().name(),
                ": cannot fill a tensor that requires grad and has autograd history (a non-leaf) in grad mode; "
                "fill it under torch.no_grad() (as initkit.init does) or fill a detached tensor");
  }
  {
    at::AutoDispatchBelowAutograd guard;
    op.redispatchBoxed(keys & c10::after_autograd_keyset, stack);
  }
  for (const at::Tensor& t : written) {
    const at::Tensor& tangent = t._fw_grad(/*level=*/0);  // the level torch's own kernels check
    if (tangent.defined()) tangent.zero_();
  }
}

void fill_inplace_or_view(const c10::OperatorHandle& op, c10::DispatchKeySet keys, torch::jit::Stack* stack) {
  const std::vector<at::Tensor> written = written_tensors(op, stack);
  // An inference tensor's version counter is disabled: bumping it outside InferenceMode raises
  // torch's error, which must come before the write.
  for (const at::Tensor& t : written)
    if (t.is_inference() && !c10::InferenceMode::is_enabled()) torch::autograd::increment_version(t);
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    op.redispatchBoxed(keys & c10::after_ADInplaceOrView_keyset, stack);
  }
  for (const at::Tensor& t : written) torch::autograd::increment_version(t);
}

}  // namespace

TORCH_LIBRARY_IMPL(initkit, Autograd, m) {
  for (const char* name : {"uniform_fill", "normal_fill", "trunc_normal_fill", "multi_fill", "_philox_fill", "_fill_block"})
    m.impl(name, torch::CppFunction::makeFromBoxedFunction<&fill_autograd>());
}

TORCH_LIBRARY_IMPL(initkit, ADInplaceOrView, m) {
  for (const char* name : {"uniform_fill", "normal_fill", "trunc_normal_fill", "multi_fill", "_philox_fill", "_fill_block"})
    m.impl(name, torch::CppFunction::makeFromBoxedFunction<&fill_inplace_or_view>());
}

}  // namespace initkit
