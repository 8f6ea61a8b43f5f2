"""Record a model's own init while its constructor runs with parameters on the meta device.

`Recorder` is what `deferred_init` runs the constructor under:
- `nn.Module.register_parameter` moves every new parameter to the meta device (buffers stay real, so
  the constructor computes them as usual). A parameter that arrives with values (`nn.Parameter(
  torch.zeros(d))`) is recorded as a copy of them; `nn.Parameter(t)` of a tracked t shares its record.
- The init functions (torch.nn.init, transformers' table, timm: see patch.py) are recorded as what
  they fill, without running.
- A TorchFunctionMode sees tensor methods on parameters and on views of them (`p.data.normal_(0,
  0.02)`, `w[padding_idx].zero_()`, `p.mul_(c)`, `__setitem__`, and torch.nn.init functions that
  dispatch torch functions when some module holds one we did not wrap).
- Tensors computed from parameters (`p.data.float()`, `w * 100`, `torch.ones_like(w)`, the clones
  `copy.deepcopy` makes, `p.to(torch.bfloat16)` in `Module._apply`) are tracked too, as a replay of
  that computation, so `.data = <such a tensor>`, `nn.Parameter(<such a tensor>)` and buffers made
  from parameters get exactly the values plain construction gives them.

Each tracked tensor object maps to a `Slot` (its storage as construction sees it) and a view chain;
the slot holds the current `Record`: a `base` (the last full-tensor write: a fusable `Fill`, or an
exact `Replay` of a torch call) and the `ops` after it (partial writes, scalings that cannot be folded
into the fill, unknown in-place ops), replayed in recording order. A later full write replaces the
base and drops the ops before it, so construct-then-post_init costs one write. Scaling a fill by a
constant (`mul_`, `div_`, `add_`, `sub_`) is folded into the fill's parameters. Once a replay reads a
record (a `copy_` from it, a computation on it), its values at that point are kept: a later full
write starts a new record in the slot and nothing more is folded into it, so the reader sees what it
saw during construction. `.data = t` points the slot at t's storage, as in torch.
"""

import numbers
import threading
from collections import Counter
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
_SMALL = 1 << 16  # creation values of at most this many elements are checked for a constant
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
# Computations whose result has the law of a fill of their one input, scaled: name -> (factor, shift)
# for the scalar operand c (None: no operand). A fill read only by one of them becomes its result's fill.
_PASSTHROUGH = {
    "clone": None, "contiguous": None, "to": None, "float": None, "double": None, "half": None,
    "bfloat16": None,
    **{name: lambda c: (c, 0.0) for name in ("mul", "__mul__", "__rmul__")},
    **{name: lambda c: (1.0 / c, 0.0) for name in ("div", "__truediv__")},
    **{name: lambda c: (1.0, c) for name in ("add", "__add__", "__radd__")},
    **{name: lambda c: (1.0, -c) for name in ("sub", "__sub__")},
}  # fmt: skip


@dataclass(frozen=True)
class Ref:
    """A tracked tensor used as an argument of a replayed op: resolved to the real tensor's view.
    `record`: the values it had when the op ran (later full writes start a new record)."""

    record: "Record"
    chain: tuple


@dataclass
class Replay:
    """One exact torch call to repeat on the real tensor: func(view, *args, **kwargs)."""

    seq: int  # recording order, across all tensors
    func: Any
    chain: tuple  # view steps from the tensor to the written view: (func, args, kwargs, index)
    args: tuple
    kwargs: dict

    def refs(self) -> list[Ref]:
        return refs_in((self.chain, self.args, self.kwargs))


def refs_in(value) -> list[Ref]:
    if isinstance(value, Ref):
        return [value, *refs_in(value.chain)]
    if isinstance(value, (tuple, list)):
        return [ref for v in value for ref in refs_in(v)]
    if isinstance(value, dict):
        return [ref for v in value.values() for ref in refs_in(v)]
    return []


def compute_into(target: Tensor, func, index, /, *args, **kwargs) -> None:
    """The replay of a tensor computed during construction (`w * 100`, `p.float()`, a clone): func's
    result (item `index` of a tuple result) written into the storage that stands for it."""
    result = func(*args, **kwargs)
    target.copy_(result if index is None else result[index])


@dataclass(eq=False)
class Created:
    """The values a parameter came with (`nn.Parameter(torch.empty(n))` too), kept as they are until the
    recording ends: most are replaced by a later full write, and then need no constant check or copy."""

    values: Tensor
    seq: int  # recording order of the creation, for a copy replayed before later partial writes


@dataclass(eq=False)
class Record:
    """What construction wrote into one tensor's storage, from the last full write it keeps."""

    shape: torch.Size
    dtype: torch.dtype
    stride: tuple  # the tensor's layout, for the scratch a record nothing else holds is computed in
    base: Fill | Replay | Created | None = None
    ops: list[Replay] = field(default_factory=list)
    problem: str | None = None  # why this tensor cannot be replayed (raised at materialize)
    created_on_meta: bool = False  # came without values: something must write it
    read: bool = False  # a replay reads it: full writes start a new record, nothing is folded into it

    @classmethod
    def like(cls, tensor: Tensor, **kwargs) -> "Record":
        return cls(tensor.shape, tensor.dtype, tensor.stride(), **kwargs)

    def why_not_replayable(self) -> str | None:
        if self.problem is None and self.created_on_meta and self.base is None:
            return "it was created on the meta device and never written, so it has no values"
        return self.problem

    def replays(self) -> list[Replay]:
        return ([self.base] if isinstance(self.base, Replay) else []) + self.ops

    def write(self, value: Fill | Replay, full: bool) -> None:
        if full:
            self.base, self.ops = value, []
        else:
            self.ops.append(value)


@dataclass(eq=False)
class Slot:
    """A tensor's storage as construction sees it; tensors that share storage share the slot."""

    record: Record


def apply_chain(root: Tensor, chain: tuple) -> Tensor:
    view = root
    for func, args, kwargs, index in chain:
        view = func(view, *args, **kwargs)
        if index is not None:
            view = view[index]
    return view


def reachable(records: list[Record]) -> list[Record]:
    """`records` and every record their replays read, transitively, in a fixed order."""
    found = {id(r): r for r in records}
    stack = list(reversed(records))
    while stack:
        for replay in stack.pop().replays():
            for ref in replay.refs():
                if id(ref.record) not in found:
                    found[id(ref.record)] = ref.record
                    stack.append(ref.record)
    return list(found.values())


def finish(named: list[Record]) -> None:
    """Once construction is done (`named`: the records parameters and buffers end with):
    - creation values no full write replaced become a constant when small and constant
      (`nn.Parameter(ls_init * torch.ones(d))`), else a copy of them, replayed in creation order;
    - a fill that only one copy or conversion reads (`p.data = trunc_normal_(p.data.float()).to(
      torch.bfloat16)`, `w.data = w.data * 100`, `p.to(torch.bfloat16)`) moves to its result, so it stays
      one fused fill instead of a scratch tensor and a copy."""
    records = reachable(named)
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
    readers = Counter(id(ref.record) for record in records for replay in record.replays() for ref in replay.refs())
    kept = {id(r) for r in named}
    for record in sorted((r for r in records if isinstance(r.base, Replay)), key=lambda r: r.base.seq):
        found = _passthrough(record.base)
        if found is None:
            continue
        source, law = found
        if readers[id(source)] != 1 or id(source) in kept or not isinstance(source.base, Fill):
            continue
        # the source's ops after the read change only the source, which nothing else reads
        seen = [op for op in source.ops if op.seq < record.base.seq]
        movable = not seen or (law == (1.0, 0.0) and all(_moves(op, record.dtype) for op in seen))
        if _same_law(source, record) and movable:
            record.base, record.ops = source.base.scaled(*law), seen + record.ops


def _passthrough(base: Replay) -> tuple[Record, tuple[float, float]] | None:
    """(source, (factor, shift)) when `base` writes the whole tensor with a copy, a float conversion or a
    scalar affine map of one whole other tensor."""
    refs = base.refs()
    if base.chain or len(refs) != 1 or refs[0].chain:
        return None
    if base.func is torch.Tensor.copy_ and isinstance(base.args[0], Ref):
        return refs[0].record, (1.0, 0.0)
    if base.func is not compute_into or base.args[1] is not None or not isinstance(base.args[2], Ref):
        return None
    name, operands = getattr(base.args[0], "__name__", ""), base.args[3:]
    if name not in _PASSTHROUGH:
        return None
    law = _PASSTHROUGH[name]
    if law is None:
        return (refs[0].record, (1.0, 0.0)) if not any(isinstance(v, Tensor) for v in operands) else None
    if len(operands) != 1 or base.kwargs or not _real(operands[0]) or (operands[0] == 0 and "div" in name):
        return None
    return refs[0].record, law(float(operands[0]))


def _moves(op: Replay, dtype: torch.dtype) -> bool:
    """Whether a partial write gives the same values in `dtype` as in its own, then converted: zeroing
    (Embedding's padding row) and filling with a value `dtype` holds exactly."""
    name = getattr(op.func, "__name__", "")
    if op.refs() or op.kwargs or name not in ("zero_", "fill_"):
        return False
    if name == "zero_":
        return not op.args
    return len(op.args) == 1 and _real(op.args[0]) and torch.tensor(op.args[0], dtype=dtype).item() == op.args[0]


def _same_law(source: Record, record: Record) -> bool:
    return source.shape == record.shape and source.dtype.is_floating_point and record.dtype.is_floating_point


def _real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


class _Mode(TorchFunctionMode):
    def __init__(self, recorder: "Recorder"):
        super().__init__()
        self.recorder = recorder

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        recorder = self.recorder
        first = args[0] if args else None
        tracked = recorder.lookup(first)
        if tracked is not None:
            function = recorder.init_by_original.get(func)
            if function is not None:  # a torch.nn.init function reached through torch-function dispatch
                return recorder.record_init_call(function, first, args[1:], kwargs)
            return recorder.on_tensor_op(func, first, tracked, args[1:], kwargs)
        if recorder.reads_tracked(args, kwargs):
            return recorder.on_computation(func, args, kwargs)
        return func(*args, **kwargs)


class Recorder:
    """Records the init of every parameter created while active (one thread; not reentrant)."""

    def __init__(self):
        self._tracked = WeakIdKeyDictionary()  # tensor -> (Slot, chain, full)
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

    def reads_tracked(self, args, kwargs) -> bool:
        """Whether a call's arguments (or lists of them: torch.cat) hold a tracked tensor."""
        for value in (*args, *kwargs.values()):
            if self.tracks(value) or (isinstance(value, (tuple, list)) and any(self.tracks(v) for v in value)):
                return True
        return False

    def record_of(self, tensor: Tensor) -> Record | None:
        """The record of a parameter or buffer that is a whole tracked tensor (not a view of one)."""
        tracked = self._tracked.get(tensor)
        return tracked[0].record if tracked is not None and not tracked[1] else None

    def adopt(self, param: nn.Parameter) -> nn.Parameter:
        """The meta parameter to register instead of `param` (param itself if already tracked)."""
        if self.lookup(param) is not None:
            return param
        if param.is_meta:  # created under torch.device("meta"): fine if the constructor writes it
            meta = param
            record = Record.like(meta, created_on_meta=True)
        else:
            with torch._C.DisableTorchFunction():
                meta = type(param)(torch.empty_like(param, device="meta"), requires_grad=param.requires_grad)
            meta.__dict__.update(param.__dict__)
            record = Record.like(meta, base=self._created(param.detach()))
        self._tracked[meta] = (Slot(record), (), True)
        return meta

    def share(self, param: nn.Parameter, data) -> None:
        """`nn.Parameter(data)` for a tracked `data` (a clone `copy.deepcopy` made, `w.float()`, `w`):
        the parameter shares its storage, as in torch."""
        tracked = self.lookup(data)
        if tracked is None:
            return
        if tracked[1]:
            problem = "it was made from a view of another tensor and shares its storage, which cannot be replayed"
            tracked = (Slot(Record.like(param, problem=problem)), (), True)
        self._tracked[param] = tracked

    # -- recording --

    def _created(self, values: Tensor) -> Created:
        self._seq += 1
        return Created(values, self._seq)

    def _write(self, slot: Slot, value: Fill | Replay, full: bool) -> None:
        if full and slot.record.read:  # a replay reads the values it has now: keep them for it
            old = slot.record
            slot.record = Record(old.shape, old.dtype, old.stride)
        slot.record.write(value, full)

    def _replay(self, func, chain, args, kwargs) -> Replay:
        args, kwargs = self._freeze(args), self._freeze(kwargs)
        self._seq += 1
        return Replay(self._seq, func, chain, args, kwargs)

    def _freeze(self, value):
        """Arguments of a replayed call: tracked tensors become Refs to the values they have now; other
        meta tensors have no values."""
        if isinstance(value, Tensor):
            tracked = self.lookup(value)
            if tracked is not None:
                tracked[0].record.read = True
                return Ref(tracked[0].record, tracked[1])
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
        slot, chain, full = self.lookup(tensor)
        fill = function.spec(tensor, *args, **kwargs)  # torch's errors for bad arguments, now
        if fill is not None and full:
            self._write(slot, fill.keyed(function.generator(args, kwargs)), full=True)
        else:
            self._write(slot, self._replay(function.original, chain, args, kwargs), full)
        return tensor

    def on_tensor_op(self, func, tensor, tracked, args, kwargs):
        slot, chain, full = tracked
        name = getattr(func, "__name__", "")
        if name == "__set__" and getattr(func, "__self__", None) is _DATA:
            return self._set_data(tensor, args[0])
        inplace = name in _INPLACE_DUNDERS or (name.endswith("_") and not name.startswith("__"))
        if not inplace:
            return self.on_computation(func, (tensor, *args), kwargs)
        result = func(tensor, *args, **kwargs)  # on meta: only checks shapes and arguments
        record = slot.record
        fill = self._as_fill(name, args, kwargs) if full else None
        affine = self._as_affine(name, args, kwargs) if full else None
        if fill is not None:
            self._write(slot, fill.keyed(kwargs.get("generator")), full=True)
        elif affine is not None and isinstance(record.base, Fill) and not record.ops and not record.read:
            record.base = record.base.scaled(*affine)
        else:
            self._write(slot, self._replay(func, chain, args, kwargs), full=full and name == "copy_")
        return result

    def on_computation(self, func, args, kwargs):
        """A call that reads tracked tensors without writing them: views and aliases of a tracked first
        argument are tracked as such, new tensors as the replay of this call; `out=` is written."""
        out = kwargs.get("out")
        if isinstance(out, (tuple, list)) and any(self.tracks(t) for t in out):
            raise NotImplementedError(
                f"deferred_init: {getattr(func, '__name__', func)}(..., out=(...)) writes several tensors "
                "deferred_init tracks, which it cannot record; build this model under initkit.patch() instead"
            )
        result = func(*args, **kwargs)  # reads and views run on meta
        written = self.lookup(out)
        if written is not None:
            slot, chain, full = written
            kwargs = {k: v for k, v in kwargs.items() if k != "out"}
            self._write(slot, self._replay(compute_into, chain, (func, None, *args), kwargs), full)
            return result
        first = self.lookup(args[0]) if args else None
        outs = result if isinstance(result, (tuple, list)) else (result,)
        computed = []
        for index, view in enumerate(outs):
            if not isinstance(view, Tensor) or not view.is_meta or self.lookup(view) is not None:
                continue
            index = index if isinstance(result, (tuple, list)) else None
            alias = getattr(func, "__self__", None) is _DATA or getattr(func, "__name__", "") in _ALIASES
            if first is not None and alias:
                self._tracked[view] = first
            elif first is not None and view._is_view():
                self._track_view(func, first, args[1:], kwargs, view, index)
            else:
                computed.append((index, view))
        for index, view in computed:
            try:
                replay = self._replay(compute_into, (), (func, index, *args), kwargs)
            except NotImplementedError:  # it also reads a meta tensor without values: so has it none
                return result
            self._tracked[view] = (Slot(Record.like(view, base=replay)), (), True)
        return result

    def _set_data(self, tensor, value):
        """`t.data = value`: t now holds value's storage (a tracked tensor: its slot) or a copy of real
        values; its old storage keeps its record for whatever still reads it."""
        source = self.lookup(value)
        if isinstance(value, Tensor) and not value.is_meta:
            with torch._C.DisableTorchFunction():
                tensor.data = torch.empty_like(value, device="meta")
            tracked = (Slot(Record.like(tensor, base=self._created(value.detach()))), (), True)
        else:
            with torch._C.DisableTorchFunction():
                tensor.data = value
            if source is not None and not source[1]:
                tracked = source
            else:
                problem = (
                    "its .data was set to a view of another tensor, whose storage it then shares"
                    if source is not None
                    else "its .data was set to a tensor computed on the meta device from values deferred_init "
                    "does not know"
                )
                tracked = (Slot(Record.like(tensor, problem=problem)), (), True)
        self._tracked[tensor] = tracked
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
            if _real(value):
                return Fill("constant", (float(value),))
        return None

    @staticmethod
    def _as_affine(name, args, kwargs) -> tuple[float, float] | None:
        if name not in _AFFINE or len(args) != 1 or not set(kwargs) <= {"alpha"}:
            return None
        value, alpha = args[0], kwargs.get("alpha", 1)
        if not all(_real(v) for v in (value, alpha)):
            return None
        if name in ("div_", "__itruediv__") and value == 0:
            return None
        return _AFFINE[name](float(value) * float(alpha))

    def _track_view(self, func, tracked, args, kwargs, view, index) -> None:
        slot, chain, _ = tracked
        step = (func, self._freeze(args), self._freeze(kwargs), index)
        record = slot.record
        # full: every element of the tensor, as the tensor's own dtype (not .real of a complex one)
        full = view.numel() == _numel(record.shape) and view.dtype == record.dtype
        self._tracked[view] = (slot, (*chain, step), full)

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
    """Swaps nn.Module.register_parameter and nn.Parameter.__new__ while any thread records (the swap is
    process-wide; the hooks only act for the thread whose recorder is active)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._users = 0
        self._original = None
        self._original_new = None

    def acquire(self):
        with self._lock:
            if self._users == 0:
                self._original = nn.Module.register_parameter
                self._original_new = nn.Parameter.__dict__["__new__"]
                original, original_new = self._original, self._original_new.__func__

                def register_parameter(module, name, param):
                    recorder = getattr(_patch.recording, "recorder", None)
                    if recorder is not None and isinstance(param, nn.Parameter) and not isinstance(
                        param, nn.parameter.UninitializedParameter
                    ):
                        param = recorder.adopt(param)
                    return original(module, name, param)

                def parameter_new(cls, data=None, requires_grad=True):
                    param = original_new(cls, data, requires_grad)
                    recorder = getattr(_patch.recording, "recorder", None)
                    if recorder is not None:
                        recorder.share(param, data)
                    return param

                nn.Module.register_parameter = register_parameter
                nn.Parameter.__new__ = staticmethod(parameter_new)
            self._users += 1

    def release(self):
        with self._lock:
            self._users -= 1
            if self._users == 0:
                nn.Module.register_parameter = self._original
                nn.Parameter.__new__ = self._original_new


_register_hook = _RegisterHook()
