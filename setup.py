"""Builds initkit._C against the installed torch. Configuration (all optional):

INITKIT_BUILD_EXT=0   pure-Python install (every op then runs on the torch fallback)
INITKIT_FORCE_CUDA=1  build the CUDA kernels even if torch.version.cuda/CUDA_HOME say otherwise
INITKIT_NATIVE=1      tune the whole build for this machine's CPU (-march=native): not portable.
                      Without it the build runs on any x86-64; the fill kernels still pick
                      AVX-512/AVX2 at run time.
INITKIT_DEBUG=1       -O0 -g
TORCH_CUDA_ARCH_LIST  respected; default "8.0;9.0+PTX" when unset and no GPU is visible
MAX_JOBS              parallel compile jobs (ninja)
"""

import os
from pathlib import Path

import torch
from setuptools import setup
from torch.utils import cpp_extension

ROOT = Path(__file__).resolve().parent
CSRC = ROOT / "csrc"


def env_flag(name: str) -> bool:
    return os.environ.get(name, "0") == "1"


def torch_minor() -> tuple[int, int]:
    major, minor = torch.__version__.split("+")[0].split(".")[:2]
    return int(major), int(minor)


SUPPORTED_TORCH = ((2, 11), (2, 14))
if not SUPPORTED_TORCH[0] <= torch_minor() <= SUPPORTED_TORCH[1]:
    raise SystemExit(f"initkit supports torch 2.11 to 2.14, found {torch.__version__}: install a supported torch first, then pip install .")


def with_cuda() -> bool:
    # Decided from the build, never from torch.cuda.is_available(): a GPU-less build host can
    # still build the CUDA kernels.
    return env_flag("INITKIT_FORCE_CUDA") or (
        torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None
    )


def check_cuda_toolkit() -> None:
    # torch takes CUDA_HOME from `which nvcc` when the variable is unset, which is wrong when
    # nvcc on PATH is a wrapper script: say so instead of failing later on a missing header.
    home = Path(cpp_extension.CUDA_HOME or "")
    if not (home / "include" / "cuda_runtime.h").is_file():
        raise SystemExit(
            f"initkit: CUDA build requested but CUDA_HOME={home} holds no include/cuda_runtime.h; "
            "set CUDA_HOME to the CUDA toolkit folder (the one holding bin/nvcc)"
        )


def sources(cuda: bool) -> list[str]:
    files = [f for folder in ("", "cpu/", "autograd/", "autocast/") for f in sorted(CSRC.glob(folder + "*.cpp"))]
    if cuda:
        files += sorted(CSRC.glob("cuda/*.cu")) + sorted(CSRC.glob("cuda/*.cpp"))
    return [str(f.relative_to(ROOT)) for f in files]  # setuptools wants relative paths


def write_build_info(cuda: bool, archs: str | None) -> None:
    info = ROOT / "initkit" / "_build_info.py"
    info.write_text(
        '"""Written by setup.py at build time: what initkit._C was compiled against."""\n'
        f"torch_version = {torch.__version__!r}\n"
        f"cuda_version = {torch.version.cuda if cuda else None!r}\n"
        f"with_cuda = {cuda!r}\n"
        f"cuda_arch_list = {archs!r}\n"
    )


def extension():
    cuda = with_cuda()
    cxx_std = "-std=c++20" if torch_minor() >= (2, 13) else "-std=c++17"
    opt = ["-O0", "-g"] if env_flag("INITKIT_DEBUG") else ["-O3"]
    # No FP contraction: the fill math must round identically on every ISA clone and on CUDA.
    cxx = [*opt, cxx_std, "-fopenmp", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math", "-DPy_LIMITED_API=0x030A0000"]
    if env_flag("INITKIT_NATIVE"):
        cxx.append("-march=native")
    kwargs = dict(
        name="initkit._C",
        sources=sources(cuda),
        include_dirs=[str(CSRC)],
        extra_link_args=["-fopenmp"],  # at::parallel_for is inline OpenMP: without it, one thread
        py_limited_api=True,
    )
    archs = None
    if cuda:
        check_cuda_toolkit()
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0+PTX"
        archs = os.environ.get("TORCH_CUDA_ARCH_LIST")
        nvcc = [*opt, cxx_std, "--fmad=false", "--expt-relaxed-constexpr", "-lineinfo", "-DINITKIT_WITH_CUDA"]
        kwargs["extra_compile_args"] = {"cxx": [*cxx, "-DINITKIT_WITH_CUDA"], "nvcc": nvcc}
        ext = cpp_extension.CUDAExtension(**kwargs)
    else:
        kwargs["extra_compile_args"] = {"cxx": cxx}
        ext = cpp_extension.CppExtension(**kwargs)
    write_build_info(cuda, archs)
    print(
        f"initkit build: torch {torch.__version__}, CUDA {'on (' + str(torch.version.cuda) + ', archs ' + str(archs) + ')' if cuda else 'off'}, "
        f"{len(kwargs['sources'])} sources"
    )
    return ext


ext_modules = [] if os.environ.get("INITKIT_BUILD_EXT", "1") == "0" else [extension()]

setup(
    ext_modules=ext_modules,
    cmdclass={"build_ext": cpp_extension.BuildExtension},
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
)
