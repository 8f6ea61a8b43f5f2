// Usage: initkit_run_aoti PACKAGE.pt2 ROWS FEATURES
// Runs an AOTInductor package (torch._inductor.aoti_compile_and_package of an exported model that
// calls initkit ops) on x = linspace(-2, 2, ROWS * FEATURES).reshape(ROWS, FEATURES) and prints
// `output <values>`. The package calls the ops through the dispatcher: <initkit/ops.h> keeps the
// initkit_ops library linked, so they are registered before the package is loaded.
#include <initkit/ops.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/torch.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: " << argv[0] << " PACKAGE.pt2 ROWS FEATURES\n";
    return 2;
  }
  const int64_t rows = std::atoll(argv[2]), features = std::atoll(argv[3]);
  torch::inductor::AOTIModelPackageLoader loader(argv[1]);
  const at::Tensor x = torch::linspace(-2, 2, rows * features, torch::kFloat).reshape({rows, features});
  const at::Tensor out = loader.run({x})[0].to(at::kDouble).contiguous().view(-1);
  std::cout << "output";
  for (int64_t i = 0; i < out.numel(); ++i) std::printf(" %.17g", out.data_ptr<double>()[i]);
  std::cout << std::endl;
  return 0;
}
