// Forward-mode AD (torch.autograd.forward_ad, torch.func.jvp / jacfwd) for the dense ops: their
// autograd Functions define a backward only, so a call with a tangent on any argument runs the
// ATen composite instead (linear, relu), whose ops carry the forward-mode formulas; without this
// the output would silently have no tangent. Level 0, the level torch's generated autograd checks.
#pragma once
#include <ATen/ATen.h>

#include <optional>

namespace initkit {

inline bool has_forward_grad(const at::Tensor& t) { return t.defined() && t._fw_grad(/*level=*/0).defined(); }

inline bool has_forward_grad(const std::optional<at::Tensor>& t) { return t.has_value() && has_forward_grad(*t); }

}  // namespace initkit
