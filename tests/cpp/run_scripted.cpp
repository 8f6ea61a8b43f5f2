// Usage: initkit_run_scripted MODEL.pt ROWS FEATURES
// Runs the scripted model on x = linspace(-2, 2, ROWS * FEATURES).reshape(ROWS, FEATURES) (an
// input Python can rebuild exactly), then backward of output.sum(), and prints one line each:
//   output <values>, input_grad <values>, param_grad <name> <values>
// <initkit/ops.h> is what makes this work: it references the initkit_ops library, so the
// linker keeps it and its static initializers register the initkit:: ops before torch::jit::load.
#include <initkit/ops.h>
#include <torch/script.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>

namespace {
void print(const char* label, const at::Tensor& t) {
  const at::Tensor flat = t.detach().to(at::kDouble).contiguous().view(-1);
  std::cout << label;
  for (int64_t i = 0; i < flat.numel(); ++i) std::printf(" %.17g", flat.data_ptr<double>()[i]);
  std::cout << std::endl;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: " << argv[0] << " MODEL.pt ROWS FEATURES\n";
    return 2;
  }
  const int64_t rows = std::atoll(argv[2]), features = std::atoll(argv[3]);
  torch::jit::Module model = torch::jit::load(argv[1]);
  const at::Tensor x = torch::linspace(-2, 2, rows * features, torch::kFloat).reshape({rows, features}).requires_grad_();
  const at::Tensor out = model.forward({x}).toTensor();
  out.sum().backward();
  print("output", out);
  print("input_grad", x.grad());
  for (const auto& param : model.named_parameters()) print(("param_grad " + param.name).c_str(), param.value.grad());
  return 0;
}
