"""Record a model's own init while its constructor runs with parameters on the meta device.

`Recorder` is what `deferred_init` runs the constructor under:
- `nn.Module.register_parameter` moves every new parameter to the meta device (buffers stay real, so
  the constructor computes them as usual). A parameter that arrives with values (`nn.Parameter(
  torch.zeros(d))`) is recorded as a copy of them.
- The init functions (torch.nn.init, transformers' table, timm: see patch.py) are recorded as what
  they fill, without running.
- A TorchFunctionMode sees tensor methods on parameters and on views of them (`p.data.normal_(0,
  0.02)`, `w[padding_idx].zero_()`, `p.mul_(c)`, `__setitem__`, and torch.nn.init functions that
  dispatch torch functions when some module holds one we did not wrap).

Per parameter this keeps one `Record`: a `base` (the last full-tensor write: a fusable `Fill`, or an
exact `Replay` of a torch call) and the `ops` after it (partial writes, scalings that cannot be folded
into the fill, unknown in-place ops), replayed in recording order. A later full write replaces the
base and drops the ops before it, so construct-then-post_init costs one write. Scaling a fill by a
constant (`mul_`, `div_`, `add_`, `sub_`) is folded into the fill's parameters.
"""

import numbers
import threading
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils.weak import WeakIdKeyDictionary

from . import patch as _patch
from .patch import Fill, checked_fill

_DATA = torch._C.TensorBase.__dict__["data"]  # the .data descriptor: .data reads alias the parameter
_ALIASES = ("detach", "detach_")
_SMALL = 1 << 16  # creation values of at most this many elements are checked for a constant  # results that are the same memory, whole
_INPLACE_DUNDERS = {
    "__setitem__", "__iadd__", "__isub__", "__imul__", "__itruediv__", "__ifloordiv__", "__imod__",
    "__ipow__", "__iand__", "__ior__", "__ixor__", "__ilshift__", "__irshift__", "__imatmul__",
}  # fmt: skip
# Scalar in-place arithmetic folded into a fill: name -> (factor, shift) for operand c.
_AFFINE = {
    "mul_": lambda c: (c, 0.0),
    "__imul__": lambda c: (c, 0.0),
    "div_": lambda c: (1.0 / c, 0.0),
    "__itruediv__": lambda c: (1.0 / c, 0.0),
    "add_": lambda c: (1.0, c),
    "__iadd__": lambda c: (1.0, c),
    "sub_": lambda c: (1.0, -c),
    "__isub__": lambda c: (1.0, -c),
}


@dataclass(frozen=True)
class Ref:
    """A tracked tensor used as an argument of a replayed op: resolved to the real parameter's view."""

    record: "Record"
    chain: tuple


@dataclass
class Replay:
    """One exact torch call to repeat on the real tensor: func(view, *args, **kwargs)."""

    seq: int  # recording order, across all parameters
    func: Any
    chain: tuple  # view steps from the parameter to the written tensor: (func, args, kwargs, index)
    args: tuple
    kwargs: dict


@dataclass(eq=False)
class Created:
    """The values a parameter came with (`nn.Parameter(torch.empty(n))` too), kept as they are until the
    recording ends: most are replaced by a later full write, and then need no constant check or copy."""

    values: Tensor
    seq: int  # recording order of the creation, for a copy replayed before later partial writes


@dataclass(eq=False)
class Record:
    """What the constructor wrote into one parameter."""

    shape: torch.Size
    base: Fill | Replay | Created | None = None
    ops: list[Replay] = field(default_factory=list)
    problem: str | None = None  # why this parameter cannot be replayed (raised at materialize)
    created_on_meta: bool = False  # came without values: something must write it

    def why_not_replayable(self) -> str | None:
        if self.problem is None and self.created_on_meta and self.base is None:
            return "it was created on the meta device and never written, so it has no values"
        return self.problem

    def write(self, value: Fill | Replay, full: bool) -> None:
        if full:
            self.base, self.ops = value, []
        else:
            self.ops.append(value)


def apply_chain(root: Tensor, chain: tuple) -> Tensor:
    view = root
    for func, args, kwargs, index in chain:
        view = func(view, *args, **kwargs)
        if index is not None:
            view = view[index]
    return view


class _Mode(TorchFunctionMode):
    def __init__(self, recorder: "Recorder"):
        super().__init__()
        self.recorder = recorder

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        recorder = self.recorder
        first = args[0] if args else None
        tracked = recorder.lookup(first)
        if tracked is None:
            return func(*args, **kwargs)
        function = recorder.init_by_original.get(func)
        if function is not None:  # a torch.nn.init function reached through torch-function dispatch
            return recorder.record_init_call(function, first, args[1:], kwargs)
        return recorder.on_tensor_op(func, first, tracked, args[1:], kwargs)


class Recorder:
    """Records the init of every parameter created while active (one thread; not reentrant)."""

    def __init__(self):
        self._tracked = WeakIdKeyDictionary()  # tensor -> (Record, chain, full)
        self._seq = 0
        self.init_by_original = {f.original: f for f in _patch.init_functions()}
        self._mode = _Mode(self)

    # -- tracking --

    def lookup(self, tensor) -> tuple | None:
        if not isinstance(tensor, Tensor) or not tensor.is_meta:
            return None
        return self._tracked.get(tensor)

    def tracks(self, tensor) -> bool:
        return self.lookup(tensor) is not None

    def record_of(self, param: Tensor) -> Record | None:
        tracked = self._tracked.get(param)
        return tracked[0] if tracked is not None and not tracked[1] else None

    def adopt(self, param: nn.Parameter) -> nn.Parameter:
        """The meta parameter to register instead of `param` (param itself if already tracked)."""
        if self.lookup(param) is not None:
            return param
        record = Record(param.shape)
        if param.is_meta:  # created under torch.device("meta"): fine if the constructor writes it
            record.created_on_meta = True
            meta = param
        else:
            with torch._C.DisableTorchFunction():
                meta = type(param)(torch.empty_like(param, device="meta"), requires_grad=param.requires_grad)
            meta.__dict__.update(param.__dict__)
            record.base = self._created(param.detach())
        self._tracked[meta] = (record, (), True)
        return meta

    # -- recording --

    def _created(self, values: Tensor) -> Created:
        self._seq += 1
        return Created(values, self._seq)

    def finish(self, records) -> None:
        """Decide the creation values no full write replaced: a constant when small and constant
        (`nn.Parameter(ls_init * torch.ones(d))`), else a copy of them, replayed in creation order."""
        for record in records:
            created = record.base
            if not isinstance(created, Created):
                continue
            values = created.values
            with torch._C.DisableTorchFunction():
                if 0 < values.numel() <= _SMALL and values.is_floating_point() and bool((values == values.flatten()[0]).all()):
                    record.base = Fill("constant", (values.flatten()[0].item(),))
                    continue
            record.base = Replay(created.seq, torch.Tensor.copy_, (), (values,), {})

    def _replay(self, func, chain, args, kwargs) -> Replay:
        self._seq += 1
        return Replay(self._seq, func, chain, self._freeze(args), self._freeze(kwargs))

    def _freeze(self, value):
        """Arguments of a replayed call: tracked tensors become Refs; other meta tensors have no values."""
        if isinstance(value, Tensor):
            tracked = self.lookup(value)
            if tracked is not None:
                return Ref(tracked[0], tracked[1])
            if value.is_meta:
                raise NotImplementedError(
                    "deferred_init: a parameter is written from a tensor computed on the meta device during "
                    "construction, which has no values to replay; build this model under initkit.patch() instead"
                )
            return value
        if isinstance(value, (tuple, list)):
            return type(value)(self._freeze(v) for v in value)
        if isinstance(value, dict):
            return {k: self._freeze(v) for k, v in value.items()}
        return value

    def record_init_call(self, function, tensor, args, kwargs):
        record, chain, full = self.lookup(tensor)
        fill = function.spec(tensor, *args, **kwargs)  # torch's errors for bad arguments, now
        if fill is not None and full:
            record.write(fill.keyed(function.generator(args, kwargs)), full=True)
        else:
            record.write(self._replay(function.original, chain, args, kwargs), full)
        return tensor

    def on_tensor_op(self, func, tensor, tracked, args, kwargs):
        record, chain, full = tracked
        name = getattr(func, "__name__", "")
        if name == "__set__" and getattr(func, "__self__", None) is _DATA:
            return self._set_data(tensor, tracked, args[0])
        inplace = name in _INPLACE_DUNDERS or (name.endswith("_") and not name.startswith("__"))
        if not inplace:
            out = func(tensor, *args, **kwargs)  # reads and views run on meta
            self._track_views(func, tensor, tracked, args, kwargs, out)
            return out
        result = func(tensor, *args, **kwargs)  # on meta: only checks shapes and arguments
        fill = self._as_fill(name, args, kwargs) if full else None
        affine = self._as_affine(name, args, kwargs) if full else None
        if fill is not None:
            record.write(fill.keyed(kwargs.get("generator")), full=True)
        elif affine is not None and isinstance(record.base, Fill) and not record.ops:
            record.base = record.base.scaled(*affine)
        else:
            replay = self._replay(func, chain, args, kwargs)
            record.write(replay, full=full and name == "copy_")
        return result

    def _set_data(self, param, tracked, value):
        record = tracked[0]
        if isinstance(value, Tensor) and value.is_meta:  # e.g. Module._apply converting dtypes on meta
            with torch._C.DisableTorchFunction():
                param.data = value
            if value.shape != record.shape:
                record.problem = f"its .data was replaced by a tensor of shape {tuple(value.shape)} during construction"
            return None
        with torch._C.DisableTorchFunction():
            param.data = torch.empty_like(value, device="meta")
        record.shape = param.shape
        record.write(self._created(value.detach()), full=True)
        return None

    @staticmethod
    def _as_fill(name, args, kwargs) -> Fill | None:
        if name == "normal_":
            return checked_fill("normal", _bind(args, kwargs, ("mean", 0.0), ("std", 1.0)))
        if name == "uniform_":
            return checked_fill("uniform", _bind(args, kwargs, ("from", 0.0), ("to", 1.0)))
        if name == "zero_":
            return Fill("constant", (0.0,))
        if name == "fill_":
            value = args[0] if args else kwargs.get("value")
            if isinstance(value, Tensor) and not value.is_meta and value.numel() == 1:
                value = value.item()
            if isinstance(value, numbers.Real) and not isinstance(value, bool):
                return Fill("constant", (float(value),))
        return None

    @staticmethod
    def _as_affine(name, args, kwargs) -> tuple[float, float] | None:
        if name not in _AFFINE or len(args) != 1 or not set(kwargs) <= {"alpha"}:
            return None
        value, alpha = args[0], kwargs.get("alpha", 1)
        if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in (value, alpha)):
            return None
        if name in ("div_", "__itruediv__") and value == 0:
            return None
        return _AFFINE[name](float(value) * float(alpha))

    def _track_views(self, func, tensor, tracked, args, kwargs, out) -> None:
        record, chain, _ = tracked
        alias = getattr(func, "__self__", None) is _DATA or getattr(func, "__name__", "") in _ALIASES
        outs = out if isinstance(out, (tuple, list)) else (out,)
        for index, view in enumerate(outs):
            if not isinstance(view, Tensor) or not view.is_meta or view is tensor:
                continue
            if alias:
                self._tracked[view] = tracked
            elif view._is_view():
                step = (func, self._freeze(args), self._freeze(kwargs), index if isinstance(out, (tuple, list)) else None)
                self._tracked[view] = (record, (*chain, step), view.numel() == _numel(record.shape))

    # -- the session --

    def __enter__(self):
        if getattr(_patch.recording, "recorder", None) is not None:
            raise RuntimeError("deferred_init cannot be nested")
        _patch.acquire(route=False)
        _patch.recording.recorder = self
        _register_hook.acquire()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        try:
            self._mode.__exit__(*exc)
        finally:
            _register_hook.release()
            _patch.recording.recorder = None
            _patch.release(route=False)


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _bind(args, kwargs, *defaults) -> tuple:
    """Positional-or-keyword arguments of a tensor method (e.g. normal_(mean, std)) with defaults."""
    values = []
    for i, (key, default) in enumerate(defaults):
        values.append(args[i] if i < len(args) else kwargs.get(key, default))
    return tuple(values)


class _RegisterHook:
    """Swaps nn.Module.register_parameter while any thread records (the swap is process-wide; the
    hook only acts for the thread whose recorder is active)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._users = 0
        self._original = None

    def acquire(self):
        with self._lock:
            if self._users == 0:
                self._original = nn.Module.register_parameter
                original = self._original

                def register_parameter(module, name, param):
                    recorder = getattr(_patch.recording, "recorder", None)
                    if recorder is not None and isinstance(param, nn.Parameter) and not isinstance(
                        param, nn.parameter.UninitializedParameter
                    ):
                        param = recorder.adopt(param)
                    return original(module, name, param)

                nn.Module.register_parameter = register_parameter
            self._users += 1

    def release(self):
        with self._lock:
            self._users -= 1
            if self._users == 0:
                nn.Module.register_parameter = self._original


_register_hook = _RegisterHook()
