"""Deployment of models that use the fused ops: TorchScript (script, trace, save, load in a fresh
process), LibTorch (a C++ program built with CMake that loads the scripted model), torch.export
(save/load of the ExportedProgram) and torch.compile(fullgraph=True)."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import initkit
from helpers import run_python

ROOT = Path(__file__).resolve().parents[1]
ROWS, FEATURES = 3, 4


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.first = initkit.nn.FusedLinearReLU(FEATURES, 8)
        self.no_bias = initkit.nn.FusedLinearReLU(8, 8, bias=False)
        self.head = initkit.nn.MLP([8, 6, 5, 2])

    def forward(self, x):
        return self.head(self.no_bias(self.first(x)))


def make_model():
    torch.manual_seed(0)
    return Model()


def cpp_input(rows=ROWS):
    """The input the tests/cpp programs build."""
    return torch.linspace(-2, 2, rows * FEATURES).reshape(rows, FEATURES)


def eager_results(model, x):
    x = x.clone().requires_grad_()
    model.zero_grad()
    out = model(x)
    out.sum().backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    return out.detach(), x.grad, grads


@pytest.mark.parametrize("how", ["script", "trace"])
def test_torchscript_roundtrip_in_fresh_process(ext, tmp_path, how):
    model = make_model()
    x = torch.randn(5, FEATURES)
    scripted = torch.jit.script(model) if how == "script" else torch.jit.trace(model, (x,))
    # A traced MLP runs layer by layer (see functional.mlp), summing in another order.
    torch.testing.assert_close(scripted(x), model(x), rtol=1e-6, atol=1e-6)
    path = tmp_path / "model.pt"
    scripted.save(str(path))
    torch.save({"x": x, "expected": scripted(x).detach()}, tmp_path / "io.pt")
    check = textwrap.dedent(f"""
        import torch, initkit
        io = torch.load({str(tmp_path / "io.pt")!r})
        model = torch.jit.load({str(path)!r})
        x = io["x"].clone().requires_grad_()
        out = model(x)
        torch.testing.assert_close(out, io["expected"], rtol=0, atol=0)
        out.sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0
        print("ok")
    """)
    # cwd outside the repository: `python -c` puts the cwd first on sys.path, and the source
    # tree's initkit has no compiled _C.
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_torchscript_without_the_extension_scripts_torch_layers(tmp_path):
    """Without the extension (here: a torch version it was not built for) a scripted model compiles
    torch's own layers instead of failing on the missing torch.ops.initkit."""
    code = textwrap.dedent(f"""
        import torch
        torch.__version__ = "2.99.0+cpu"
        import warnings; warnings.simplefilter("ignore")
        import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})
        import initkit
        from test_deploy import make_model
        assert not initkit.ext_available()
        model = make_model()
        scripted = torch.jit.script(model)
        assert "initkit::" not in str(scripted.inlined_graph)
        x = torch.randn(5, 4)
        # the torch backend's eager MLP runs the same layers in the same order
        torch.testing.assert_close(scripted(x), model(x), rtol=0, atol=0)
        print("ok")
    """)
    result = run_python(code)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


@pytest.mark.parametrize(
    "name, args", [("uniform_", (-0.5, 2.0)), ("normal_", (1.0, 3.0)), ("xavier_uniform_", (2.0,)), ("xavier_normal_", (2.0,))]
)
def test_scripted_fills_run_torchs_own(name, args):
    """The fills torch.jit.script takes from torch.nn.init script from initkit too, and run torch's
    function (the torch backend's values)."""
    scripted = torch.jit.script(getattr(initkit, name))
    for generator in (None, torch.Generator().manual_seed(7)):
        torch.manual_seed(0)
        got = scripted(torch.empty(6, 5), *args, generator)
        torch.manual_seed(0)
        expected = getattr(torch.nn.init, name)(torch.empty(6, 5), *args, generator=generator and torch.Generator().manual_seed(7))
        assert torch.equal(got, expected)


def test_export_save_load(ext, tmp_path):
    model = make_model()
    x = torch.randn(5, FEATURES)
    batch = torch.export.Dim("batch", min=2)
    exported = torch.export.export(model, (x,), dynamic_shapes={"x": {0: batch}})
    targets = {str(node.target) for node in exported.graph.nodes if node.op == "call_function"}
    assert {"initkit.linear_relu.default", "initkit.mlp.default"} <= targets
    path = tmp_path / "model.pt2"
    torch.export.save(exported, path)
    loaded = torch.export.load(path)
    for rows in (5, 9):
        xr = torch.randn(rows, FEATURES)
        torch.testing.assert_close(loaded.module()(xr), model(xr), rtol=0, atol=0)


def test_compile_fullgraph_forward_backward(backend):
    model = make_model()
    x = torch.randn(5, FEATURES)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")  # fake kernels + AOT autograd
    expected_out, expected_input_grad, expected_grads = eager_results(model, x)
    out, input_grad, grads = eager_results(compiled, x)  # same Parameters: keys gain "_orig_mod."
    torch.testing.assert_close(out, expected_out)
    torch.testing.assert_close(input_grad, expected_input_grad)
    torch.testing.assert_close(list(grads.values()), list(expected_grads.values()))


@pytest.mark.parametrize("layout", ["transposed", "expanded"])
@pytest.mark.parametrize("needs_grad", ["input", "weight"])
def test_compile_dynamic_batch_matches_eager(backend, layout, needs_grad):
    """dynamic=True over strided inputs, gradients for one argument only, no bias: each batch size
    gives eager's output and gradient (the same kernels, so bit for bit)."""
    torch._dynamo.reset()

    def layers(x, w1, w2):
        return initkit.functional.mlp(initkit.functional.linear_relu(x, w1), [w2, w2], [None, None])

    compiled = torch.compile(layers, fullgraph=True, dynamic=True, backend="aot_eager")
    w1, w2 = torch.randn(FEATURES, FEATURES), torch.randn(FEATURES, FEATURES)
    for rows in (3, 8):
        x = torch.randn(FEATURES, rows).t() if layout == "transposed" else torch.randn(1, FEATURES).expand(rows, -1)
        results = []
        for fn in (layers, compiled):
            args = [t.detach().requires_grad_(name == needs_grad) for name, t in (("input", x), ("weight", w1))]
            out = fn(*args, w2)
            out.sum().backward()
            results.append((out, next(a.grad for a in args if a.requires_grad)))
        assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


def _cuda_torch_hints() -> list[str]:
    """A CUDA build of LibTorch makes find_package(Torch) look for the CUDA toolkit (legacy
    FindCUDA), even for a CPU-only consumer: point it at CUDA_HOME, and at torch's own NVRTC
    where the toolkit has none (as CMakeLists.txt's header says)."""
    if torch.version.cuda is None:
        return []
    from torch.utils import cpp_extension

    toolkit = os.environ.get("CUDA_HOME") or cpp_extension.CUDA_HOME
    if toolkit is None:
        pytest.skip("torch is a CUDA build but no CUDA toolkit was found for LibTorch's CMake config")
    hints = [f"-DCUDA_TOOLKIT_ROOT_DIR={toolkit}"]
    if not list(Path(toolkit).glob("lib64/libnvrtc.so*")):
        major = torch.version.cuda.split(".")[0]
        nvrtc = Path(torch.__file__).parent.parent / "nvidia" / f"cu{major}" / "lib" / f"libnvrtc.so.{major}"
        hints.append(f"-DCUDA_nvrtc_LIBRARY={nvrtc}")
    return hints


@pytest.fixture(scope="module")
def cpp_programs(tmp_path_factory) -> Path:
    """tests/cpp built against this torch: the directory of initkit_run_scripted and initkit_run_aoti."""
    if shutil.which("cmake") is None or (shutil.which("c++") is None and shutil.which("g++") is None):
        pytest.skip("cmake or a C++ compiler is missing: the LibTorch programs cannot be built")
    build_dir = tmp_path_factory.mktemp("cpp_build")
    prefix = torch.utils.cmake_prefix_path
    configure = ["cmake", "-S", str(ROOT), "-B", str(build_dir), "-DINITKIT_BUILD_CPP_TESTS=ON",
                 f"-DCMAKE_PREFIX_PATH={prefix}", *_cuda_torch_hints()]
    build = ["cmake", "--build", str(build_dir), "--target", "initkit_run_scripted", "initkit_run_aoti",
             "-j", str(os.cpu_count() or 2)]
    for command in (configure, build):
        result = subprocess.run(command, capture_output=True, text=True, timeout=1800)
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return build_dir / "tests" / "cpp"


def _parse(stdout: str) -> dict:
    lines = {}
    for line in stdout.strip().splitlines():
        words = line.split()
        label = " ".join(words[:2]) if words[0] == "param_grad" else words[0]
        values = words[2:] if words[0] == "param_grad" else words[1:]
        lines[label] = torch.tensor([float(v) for v in values], dtype=torch.float64)
    return lines


def test_libtorch_program_runs_scripted_model(ext, tmp_path_factory, cpp_programs):
    """The C++ program links libinitkit_ops (never loaded into this process: it runs as a
    subprocess) and must give the same forward and backward results as Python."""
    program = cpp_programs / "initkit_run_scripted"
    model = make_model()
    path = tmp_path_factory.mktemp("cpp_model") / "model.pt"
    torch.jit.script(model).save(str(path))
    result = subprocess.run([str(program), str(path), str(ROWS), str(FEATURES)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    got = _parse(result.stdout)
    out, input_grad, grads = eager_results(model, cpp_input())
    # Same kernels, same inputs: only the printing round trip (17 digits) separates them.
    torch.testing.assert_close(got["output"], out.double().flatten())
    torch.testing.assert_close(got["input_grad"], input_grad.double().flatten())
    for name, grad in grads.items():
        torch.testing.assert_close(got[f"param_grad {name}"], grad.double().flatten())


def test_libtorch_program_runs_aoti_package(ext, tmp_path, cpp_programs):
    """README: an exported model compiled with AOTInductor runs from C++ with AOTIModelPackageLoader
    and initkit::ops linked; the package calls the same kernels, so the output is eager's."""
    model = make_model().eval()
    exported = torch.export.export(model, (torch.randn(5, FEATURES),),
                                   dynamic_shapes={"x": {0: torch.export.Dim("batch", min=2, max=64)}})
    package = torch._inductor.aoti_compile_and_package(exported, package_path=str(tmp_path / "model.pt2"))
    rows = ROWS + 4  # another batch size than the example's
    result = subprocess.run([str(cpp_programs / "initkit_run_aoti"), package, str(rows), str(FEATURES)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    with torch.no_grad():
        expected = model(cpp_input(rows)).double().flatten()
    torch.testing.assert_close(_parse(result.stdout)["output"], expected, rtol=0, atol=0)
