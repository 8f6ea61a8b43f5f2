"""Route the init functions models call (torch.nn.init, transformers' captured copies, timm's) to initkit.

`with initkit.patch(): model = AutoModelForCausalLM.from_config(cfg)` builds the model with its own
init scheme, filled by initkit's fused Philox kernels instead of torch's samplers. The same hooks let
`deferred_init` record those calls instead of running them (see recording.py).

Where the functions are replaced: every loaded module (outside initkit) whose global is one of
torch.nn.init's functions (torch.nn.modules.*, `from torch.nn.init import trunc_normal_` in model
code) or one of timm's `timm.layers.weight_init` fills, and every `TORCH_INIT_FUNCTIONS` table
(transformers captures torch's functions there at import and calls them from its guarded wrappers,
so its `_is_hf_initialized` skips keep working). That covers the places transformers'
`no_init_weights` patches. Only the random fills are rerouted; constant_, eye_, dirac_, orthogonal_
and sparse_ run torch's own code. The random tensor methods `normal_` / `uniform_` are rerouted too
where initkit gives the same law and torch would not raise (see _method_routable).

Every routed fill writes at the call (eagerly: code inside the block, C++ extensions and collectives
included, sees the values at once). generator=: the key is drawn from that generator at the call, as
initkit's fills do.

Thread safety: the replacement is process-wide (module globals), installed by the first active
`patch()` and removed by the last, under a lock; while any thread is inside `patch()`, every thread's
calls of those functions go to initkit. Restoring puts back exactly the objects found, except where
someone else replaced a function meanwhile (that is left alone). A module imported while patched
keeps the wrapper it bound, which calls torch's function once unpatched.
"""

import contextlib
import functools
import math
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils._device import DeviceContext

from .. import init, schemes
from .._ext import torch_fallback
from .._ext.backend import handles

RANDOM_KINDS = schemes.RANDOM_KINDS
_has_torch_function = torch.overrides.has_torch_function_unary  # a subclass's or mode's: leave it to torch
_PLAIN = (Tensor, torch.nn.Parameter)


def _plain_call(tensor: Tensor) -> bool:
    """A plain tensor and no torch-function mode but default-device ones (`with torch.device(...)`,
    torch.set_default_device), which initkit's fills handle: other modes and subclasses keep torch's code."""
    if not _has_torch_function(tensor):  # (the common case: one C call)
        return True
    modes = torch.overrides._get_current_function_mode_stack()
    return type(tensor) in _PLAIN and all(type(mode) is DeviceContext for mode in modes)


@dataclass(frozen=True)
class Fill:
    """A full-tensor write initkit can fuse: a random kind (multi_fill_ params) or "constant" (value,).
    `key`: the Philox key drawn from the `generator=` the call passed (None: materialize's key)."""

    kind: str
    params: tuple[float, ...]
    key: int | None = None

    def scaled(self, factor: float, shift: float) -> "Fill":
        """The law of (x * factor + shift) for x drawn from this fill."""
        p = self.params
        if self.kind == "constant":
            return Fill("constant", (p[0] * factor + shift,))
        if self.kind == "normal":
            return Fill("normal", (p[0] * factor + shift, p[1] * abs(factor)), self.key)
        low, high = sorted((p[-2] * factor + shift, p[-1] * factor + shift))
        if self.kind == "uniform":
            return Fill("uniform", (low, high), self.key)
        return Fill("trunc_normal", (p[0] * factor + shift, p[1] * abs(factor), low, high), self.key)

    def keyed(self, generator) -> "Fill":
        """This fill with its key drawn now from `generator` (a random fill with a generator= given)."""
        if generator is None or self.kind not in RANDOM_KINDS:
            return self
        return Fill(self.kind, self.params, int(init.new_seed(generator)))


def checked_fill(kind: str, params) -> Fill:
    """A Fill, with torch's errors for parameters its samplers reject."""
    params = tuple(float(p) for p in params)
    if kind in ("normal", "trunc_normal") and not params[1] >= 0:
        raise RuntimeError(f"{kind.replace('_', '')} expects std >= 0.0, but found std {params[1]}")
    if kind == "uniform" and not params[0] <= params[1]:
        raise RuntimeError(f"uniform_ expects to return a [from, to) range, but found from={params[0]} > to={params[1]}")
    return Fill(kind, params)


# ---- what each function fills (None: not fusable, run the function itself) -----------------


def _spec(scheme_spec: schemes.FillSpec) -> Fill:
    return checked_fill(scheme_spec.kind, scheme_spec.params)


def _uniform(tensor, a=0.0, b=1.0, generator=None):
    return checked_fill("uniform", (a, b))


def _normal(tensor, mean=0.0, std=1.0, generator=None):
    return checked_fill("normal", (mean, std))


def _trunc_normal(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0, generator=None):
    return checked_fill("trunc_normal", (mean, std, a, b))


def _constant(tensor, val):
    return Fill("constant", (float(val),))


def _ones(tensor):
    return Fill("constant", (1.0,))


def _zeros(tensor):
    return Fill("constant", (0.0,))


def _xavier_uniform(tensor, gain=1.0, generator=None):
    return _spec(schemes.xavier_uniform(tensor, gain))


def _xavier_normal(tensor, gain=1.0, generator=None):
    return _spec(schemes.xavier_normal(tensor, gain))


def _kaiming_uniform(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    return None if 0 in tensor.shape else _spec(schemes.kaiming_uniform(tensor, a, mode, nonlinearity))


def _kaiming_normal(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    return None if 0 in tensor.shape else _spec(schemes.kaiming_normal(tensor, a, mode, nonlinearity))


def _timm_trunc_normal(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0):  # (timm's takes no generator)
    return checked_fill("trunc_normal", (mean, std, a, b))


def _timm_trunc_normal_tf(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0):
    # timm: N(0, 1) cut to [a, b], then multiplied by std (a negative one too) and shifted by mean;
    # timm's own code for std 0 (the mean everywhere) and bounds a > b (its error)
    if not (a <= b and std != 0):
        return None
    return checked_fill("trunc_normal", (0.0, 1.0, a, b)).scaled(float(std), float(mean))


def _timm_variance_scaling(tensor, scale=1.0, mode="fan_in", distribution="normal"):
    # initkit's scheme where it is timm's; else timm's own code: its zeros for scale 0, its errors
    valid = (
        scale > 0
        and mode in schemes.VARIANCE_SCALING_MODES
        and distribution in schemes.VARIANCE_SCALING_DISTRIBUTIONS
        and tensor.numel() > 0
    )
    return _spec(schemes.variance_scaling(tensor, scale, mode, distribution)) if valid else None


def _timm_lecun_normal(tensor):
    return _timm_variance_scaling(tensor, 1.0, "fan_in", "truncated_normal")


def _no_fill(tensor, *args, **kwargs):
    return None


_TORCH_SPECS = {
    "uniform_": _uniform,
    "normal_": _normal,
    "trunc_normal_": _trunc_normal,
    "constant_": _constant,
    "ones_": _ones,
    "zeros_": _zeros,
    "xavier_uniform_": _xavier_uniform,
    "xavier_normal_": _xavier_normal,
    "kaiming_uniform_": _kaiming_uniform,
    "kaiming_normal_": _kaiming_normal,
    "eye_": _no_fill,
    "dirac_": _no_fill,
    "orthogonal_": _no_fill,
    "sparse_": _no_fill,
}
_TIMM_SPECS = {
    "trunc_normal_": _timm_trunc_normal,
    "trunc_normal_tf_": _timm_trunc_normal_tf,
    "variance_scaling_": _timm_variance_scaling,
    "lecun_normal_": _timm_lecun_normal,
}
TIMM_MODULE = "timm.layers.weight_init"


# torch.nn.init's random fills whose initkit twins (initkit.init) take the same arguments and give the
# same errors and warnings: patch() calls the twin directly.
_TWINS = ("uniform_", "normal_", "trunc_normal_", "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_")


@dataclass(frozen=True)
class InitFunction:
    """One function models call to init a tensor: the original, what it fills, and its initkit twin."""

    original: Callable
    spec: Callable  # same signature as original -> Fill | None
    twin: Callable | None = None

    def generator(self, args: tuple, kwargs: dict):
        """The generator= a call passed, by keyword or position (torch's functions take it last)."""
        if "generator" in kwargs:
            return kwargs["generator"]
        code = self.spec.__code__
        names = code.co_varnames[1 : code.co_argcount]  # after the tensor
        index = names.index("generator") if "generator" in names else len(args)
        return args[index] if index < len(args) else None


def init_functions() -> list[InitFunction]:
    """torch.nn.init's functions (as captured when initkit was imported) and timm's, if timm is loaded."""
    found = [
        InitFunction(getattr(torch_fallback, n), s, getattr(init, n) if n in _TWINS else None)
        for n, s in _TORCH_SPECS.items()
    ]
    timm = sys.modules.get(TIMM_MODULE)
    if timm is not None:
        found += [InitFunction(getattr(timm, n), s) for n, s in _TIMM_SPECS.items() if hasattr(timm, n)]
    return found


def run_fast(function: InitFunction, tensor, args, kwargs):
    """Run `function` on initkit's fills when what it asks for is a random fill initkit handles."""
    if isinstance(tensor, Tensor) and tensor.numel() and _plain_call(tensor):
        fill = function.spec(tensor, *args, **kwargs)
        if fill is not None and fill.kind in RANDOM_KINDS:
            return init._PRIMITIVES[fill.kind](tensor, *fill.params, function.generator(args, kwargs))
    return function.original(tensor, *args, **kwargs)


# ---- installing the wrappers ------------------------------------------------------------------

_lock = threading.Lock()
_users = 0  # active patch() / deferred_init() sessions
_routing = 0  # active patch() sessions: route calls to initkit
_swaps: list[tuple[dict, str, Callable, Callable]] = []  # (namespace, key, original, wrapper)
_wrappers: dict[int, Callable] = {}  # id(original) -> its wrapper, made once
recording = threading.local()  # recording.recorder: this thread's active deferred_init recorder


def _wrapper(function: InitFunction) -> Callable:
    wrapper = _wrappers.get(id(function.original))
    if wrapper is not None:
        return wrapper

    original, twin = function.original, function.twin

    @functools.wraps(original)
    def wrapper(tensor, *args, **kwargs):
        recorder = getattr(recording, "recorder", None)
        if recorder is not None and recorder.tracks(tensor):
            return recorder.record_init_call(function, tensor, args, kwargs)
        if not _routing:
            return original(tensor, *args, **kwargs)
        if twin is not None and isinstance(tensor, Tensor) and _plain_call(tensor):
            return twin(tensor, *args, **kwargs)
        return run_fast(function, tensor, args, kwargs)

    wrapper.__initkit_wraps__ = function
    _wrappers[id(function.original)] = wrapper
    return wrapper


# Module name -> (namespace, keys holding one of the functions or named like one): a module is scanned
# once, the first time an install sees it (scanning every loaded module's globals costs tens of ms per
# install); each install then checks those keys. The names cover a function put back after the scan
# by another library's patch (transformers' no_init_weights swaps the functions under their names).
_sites: dict[str, tuple[dict, list[str]]] = {}
_NAMES = frozenset(_TORCH_SPECS) | frozenset(_TIMM_SPECS)


def _namespaces() -> Iterator[tuple[str, dict]]:
    for name, module in list(sys.modules.items()):
        if module is None or name == "initkit" or name.startswith("initkit."):
            continue  # initkit's own references to torch's functions are its fallback: never wrap them
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        yield name, namespace
        table = namespace.get("TORCH_INIT_FUNCTIONS")
        if isinstance(table, dict):
            yield name + ".TORCH_INIT_FUNCTIONS", table


_flat_sites: tuple[int, list[tuple[dict, str]]] = (-1, [])  # (len(sys.modules), sites) of the last install


def _all_sites(by_id: dict) -> list[tuple[dict, str]]:
    global _flat_sites
    if _flat_sites[0] == len(sys.modules):
        return _flat_sites[1]  # no module loaded or unloaded since: the same places
    found = []
    for name, namespace in _namespaces():
        cached = _sites.get(name)
        if cached is None or cached[0] is not namespace:
            # (map(id, ...), isdisjoint and & run in C: most modules hold none of the functions)
            keys = list(namespace.keys() & _NAMES)
            if not by_id.keys().isdisjoint(map(id, list(namespace.values()))):
                keys += [key for key, value in list(namespace.items()) if id(value) in by_id and key not in _NAMES]
            _sites[name] = cached = (namespace, keys)
        found.extend((namespace, key) for key in cached[1])
    _flat_sites = (len(sys.modules), found)
    return found


def _install() -> None:
    by_id = {id(f.original): f for f in init_functions()}
    for namespace, key in _all_sites(by_id):
        value = namespace.get(key)
        function = by_id.get(id(value))
        if function is not None and value is function.original:
            wrapper = _wrapper(function)
            namespace[key] = wrapper
            _swaps.append((namespace, key, value, wrapper))


def _uninstall() -> None:
    while _swaps:
        namespace, key, original, wrapper = _swaps.pop()
        if namespace.get(key) is wrapper:
            namespace[key] = original


# ---- tensor methods: p.normal_(...), p.data.uniform_(...) -------------------------------------
# Only the random ones: zero_ and fill_ already run at memory speed in torch. A call is routed when
# initkit's fill gives the same law and torch would not raise: a plain floating tensor initkit's
# extension takes, with real storage, not requiring grad in grad mode, no torch-function mode (but a
# default device's) or compile trace active, finite parameters of a valid range (anything else runs
# torch's method).
_TensorBase = torch._C.TensorBase


def _method_routable(tensor) -> bool:
    return (
        type(tensor) in _PLAIN
        and not tensor.is_meta
        and not (tensor.requires_grad and torch.is_grad_enabled())
        and _plain_call(tensor)
        and not torch.compiler.is_compiling()
        and handles(tensor)
    )


def _finite(value) -> bool:
    try:
        return type(value) in (float, int) and math.isfinite(value)
    except OverflowError:  # an int beyond float's range
        return False


def _method(name: str, kind: str, first: str, second: str, defaults: tuple[float, float]) -> Callable:
    original = getattr(_TensorBase, name)
    # the keywords a call may add to 0, 1 or 2 positional arguments (a repeated one is torch's TypeError)
    keywords = ({first, second, "generator"}, {second, "generator"}, {"generator"})

    def method(self, *args, **kwargs):
        if _routing and len(args) <= 2 and kwargs.keys() <= keywords[len(args)] and _method_routable(self):
            a = args[0] if args else kwargs.get(first, defaults[0])
            b = args[1] if len(args) > 1 else kwargs.get(second, defaults[1])
            generator = kwargs.get("generator")
            if (
                _finite(a) and _finite(b)
                and (b >= 0 if kind == "normal" else a <= b and _finite(b - a))
                and (generator is None or (type(generator) is torch.Generator and generator.device.type == self.device.type))
            ):  # fmt: skip
                return init._PRIMITIVES[kind](self, a, b, generator)
        return original(self, *args, **kwargs)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = original.__doc__
    method.__initkit_routes__ = original
    return method


_METHODS = {
    "normal_": _method("normal_", "normal", "mean", "std", (0.0, 1.0)),
    "uniform_": _method("uniform_", "uniform", "from", "to", (0.0, 1.0)),
}
_method_swaps: list[tuple[str, object]] = []  # (name, what torch.Tensor.__dict__ held, or _ABSENT)
_ABSENT = object()


def _install_methods() -> None:
    for name, method in _METHODS.items():
        _method_swaps.append((name, Tensor.__dict__.get(name, _ABSENT)))
        setattr(Tensor, name, method)


def _uninstall_methods() -> None:
    while _method_swaps:
        name, previous = _method_swaps.pop()
        if Tensor.__dict__.get(name) is not _METHODS[name]:
            continue  # replaced by someone else meanwhile: leave theirs
        if previous is _ABSENT:
            delattr(Tensor, name)
        else:
            setattr(Tensor, name, previous)


def acquire(route: bool) -> None:
    """Install the wrappers (first user) and, with `route`, send calls to initkit."""
    global _users, _routing
    with _lock:
        if _users == 0:
            _install()
        if route and _routing == 0:
            _install_methods()
        _users += 1
        _routing += bool(route)


def release(route: bool) -> None:
    global _users, _routing
    with _lock:  # (the check too: two threads' uninstall() of one install() must not both pass it)
        if route and _routing <= 0:
            raise RuntimeError("initkit.patch.uninstall() without a matching install()")
        _routing -= bool(route)
        _users -= 1
        if route and _routing == 0:
            _uninstall_methods()
        if _users == 0:
            _uninstall()


def install() -> None:
    """Route init calls to initkit until a matching `uninstall()` (calls nest like patch())."""
    acquire(route=True)


def uninstall() -> None:
    release(route=True)


def is_installed() -> bool:
    return _routing > 0


@contextlib.contextmanager
def _patched() -> Iterator[None]:
    acquire(route=True)
    try:
        yield
    finally:
        release(route=True)


class _Patch:
    """`with initkit.patch(): ...` routes the init functions models call to initkit's fused fills;
    `initkit.patch.install()` / `.uninstall()` do the same without a block. See the module docstring."""

    install = staticmethod(install)
    uninstall = staticmethod(uninstall)
    is_installed = staticmethod(is_installed)

    def __call__(self):
        return _patched()


patch = _Patch()
