// Public C++ header for LibTorch programs that link the initkit ops library.
//
// Including this header references initkit::register_ops(), which keeps the linker from
// dropping libinitkit_ops (whose static initializers register the initkit:: ops); without it,
// torch::jit::load of a model using initkit ops fails with "Unknown builtin op: initkit::...".
#pragma once

namespace initkit {
int register_ops();
namespace detail {
inline const int ops_registered = register_ops();
}  // namespace detail
}  // namespace initkit
