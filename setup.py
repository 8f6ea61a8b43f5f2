"""Builds initkit._C against the installed torch. Configuration (all optional):

INITKIT_BUILD_EXT=0   pure-Python install (every op then runs on the torch fallback)
INITKIT_CUDA=1|0      build the CUDA kernels even if torch.version.cuda/CUDA_HOME say otherwise | leave them out
                      (default: built when torch is a CUDA build and CUDA_HOME holds a toolkit)
INITKIT_NATIVE=1      tune the whole build for this machine's CPU (-march=native): not portable.
                      Without it the build runs on any x86-64; the fill kernels still pick
                      AVX-512/AVX2 at run time.
INITKIT_DEBUG=1       -O0 -g
TORCH_CUDA_ARCH_LIST  respected; default "8.0;9.0+PTX" when unset and no GPU is visible
MAX_JOBS              parallel compile jobs (ninja)
"""

import os
import warnings
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


# Tested range. Older torch lacks APIs initkit uses; a newer one is tried, with a warning.
SUPPORTED_TORCH = ((2, 11), (2, 15))
if torch_minor() < SUPPORTED_TORCH[0]:
    raise SystemExit(f"initkit needs torch >= 2.11, found {torch.__version__}: install a newer torch first, then pip install .")
if torch_minor() > SUPPORTED_TORCH[1]:
    warnings.warn(f"initkit is tested with torch 2.11 to 2.15; building against the untested torch {torch.__version__}")


def build_config(key: str) -> list[str]:
    """The values of `key` in csrc/build_config.txt (shared with CMakeLists.txt)."""
    lines = (CSRC / "build_config.txt").read_text().splitlines()
    return [line.split(":", 1)[1].strip() for line in lines if line.startswith(key + ":")]


def with_cuda() -> bool:
    choice = os.environ.get("INITKIT_CUDA")
    if choice in ("0", "1"):
        return choice == "1"
    # Decided from the build, never from torch.cuda.is_available(): a GPU-less build host can
    # still build the CUDA kernels.
    return torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None


def check_cuda_toolkit() -> None:
    # torch takes CUDA_HOME from `which nvcc` when the variable is unset, which is wrong when
    # nvcc on PATH is a wrapper script: say so instead of failing later on a missing header.
    home = Path(cpp_extension.CUDA_HOME or "")
    if not (home / "include" / "cuda_runtime.h").is_file():
        raise SystemExit(
            f"initkit: CUDA build requested but CUDA_HOME={home} holds no include/cuda_runtime.h; "
            "set CUDA_HOME to the CUDA toolkit folder (the one holding bin/nvcc)"
        )


def bundled_cuda_headers() -> list[str]:
    """torch's own CUDA library headers (cuBLASLt, cuSPARSE, ... from its nvidia-* wheels), searched
    after the toolkit's: ATen's CUDA headers include them, and a minimal toolkit may not have them."""
    nvidia = Path(torch.__file__).resolve().parent.parent / "nvidia"
    return [flag for folder in sorted(nvidia.glob("*/include")) for flag in ("-idirafter", str(folder))]


def sources(cuda: bool) -> list[str]:
    globs = build_config("cpu_sources") + build_config("python_sources")
    if cuda:
        globs += build_config("cuda_sources")
    files = sorted({f for pattern in globs for f in ROOT.glob(pattern)})
    return [str(f.relative_to(ROOT)) for f in files]  # setuptools wants relative paths


class BuildExt(cpp_extension.BuildExtension):
    """Also writes initkit/_build_info.py next to the compiled _C (in the build output, never a
    stale copy in the source tree): what _C was compiled against, checked by initkit/_ext/load.py."""

    def run(self):
        super().run()  # (an up-to-date _C is not rebuilt, but its build info is still written)
        for ext in self.extensions:
            self.write_build_info(ext)

    def write_build_info(self, ext) -> None:
        info = Path(self.get_ext_fullpath(ext.name)).parent / "_build_info.py"
        info.write_text(
            '"""Written by setup.py at build time: what initkit._C was compiled against."""\n'
            f"torch_version = {torch.__version__!r}\n"
            f"cuda_version = {ext.initkit_cuda_version!r}\n"
            f"with_cuda = {ext.initkit_cuda_version is not None!r}\n"
            f"cuda_arch_list = {ext.initkit_cuda_archs!r}\n"
        )


def extension():
    cuda = with_cuda()
    cxx_std = "-std=c++20" if torch_minor() >= (2, 13) else "-std=c++17"
    opt = ["-O0", "-g"] if env_flag("INITKIT_DEBUG") else ["-O3"]
    cxx = [*opt, cxx_std, "-fopenmp", *build_config("cxx_flags"), "-DPy_LIMITED_API=0x030A0000"]
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
        nvcc = [*opt, cxx_std, *build_config("nvcc_flags"), "-lineinfo", "-DINITKIT_WITH_CUDA"]
        kwargs["extra_compile_args"] = {"cxx": [*cxx, "-DINITKIT_WITH_CUDA", *bundled_cuda_headers()], "nvcc": nvcc}
        ext = cpp_extension.CUDAExtension(**kwargs)
    else:
        kwargs["extra_compile_args"] = {"cxx": cxx}
        ext = cpp_extension.CppExtension(**kwargs)
    ext.initkit_cuda_version = torch.version.cuda if cuda else None
    ext.initkit_cuda_archs = archs
    print(
        f"initkit build: torch {torch.__version__}, CUDA {'on (' + str(torch.version.cuda) + ', archs ' + str(archs) + ')' if cuda else 'off'}, "
        f"{len(kwargs['sources'])} sources"
    )
    return ext


ext_modules = [] if os.environ.get("INITKIT_BUILD_EXT", "1") == "0" else [extension()]

setup(
    ext_modules=ext_modules,
    cmdclass={"build_ext": BuildExt},
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
)
