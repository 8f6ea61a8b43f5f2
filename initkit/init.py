"""Drop-in replacement for torch.nn.init, plus variance scaling and LeCun schemes.

Every function has torch.nn.init's name, signature, defaults, return value, warnings and
exception types. The random fills (uniform, normal, truncated normal and every scheme built on
them) run as one fused, multi-threaded pass of initkit's Philox engine: the bound or std is
computed once here and applied inside the kernel. Same seed, same values, for any thread count.

RNG: each call draws a fresh 63-bit Philox key from torch's CPU generator (or `generator=`), so
torch.manual_seed() makes initkit reproducible and consecutive calls differ. On the "torch"
backend the same functions run torch's own samplers and give exactly torch.nn.init's values.
DTensors go to initkit/sharded.py. (Over 400 lines: about half are the public docstrings.)
"""

import numbers
import warnings

import torch
from torch import Tensor

from . import schemes, sharded
from ._ext import torch_fallback
from ._ext.backend import handles
from ._ext.fill_ops import FILL_KINDS, op_params, op_seed
from .schemes import FillSpec

__all__ = [
    "calculate_gain",
    "uniform_",
    "normal_",
    "trunc_normal_",
    "constant_",
    "ones_",
    "zeros_",
    "eye_",
    "dirac_",
    "xavier_uniform_",
    "xavier_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "orthogonal_",
    "sparse_",
    "variance_scaling_",
    "lecun_normal_",
    "lecun_uniform_",
    "multi_fill_",
    # Deprecated aliases, as in torch.nn.init
    "uniform",
    "normal",
    "constant",
    "eye",
    "dirac",
    "xavier_uniform",
    "xavier_normal",
    "kaiming_uniform",
    "kaiming_normal",
    "orthogonal",
    "sparse",
]

# The reproducibility contract's version: which values a (key, stream, index) gives (README,
# tests/test_contract.py). 2: exact truncated normals on narrow and far intervals. 3: float
# normals (Box-Muller on fmaf) and truncated normals of acceptance >= 0.8 by rejection. 4: the
# float log on a degree-6 polynomial (float normals and truncated normals, last bits). 5: float64
# normals on initkit's own log and sin/cos instead of libm's (float64 normals, last bits).
CONTRACT_VERSION = 5
_MAX_SEED = 2**63 - 1  # keys are drawn uniformly from [0, 2^63 - 1)
_CPU = torch.device("cpu")
try:  # NumPy scalars: torch takes np.bool_, np.integer and np.floating as floats
    from numpy import bool_, floating, integer, ndarray

    _NUMPY_REALS: tuple[type, ...] = (bool_, integer, floating)
except ImportError:  # torch runs without NumPy
    _NUMPY_REALS = ()
    ndarray = ()  # (isinstance(x, ()) is False)
_PARSER_REALS = (float, int, torch.SymFloat, torch.SymInt, *_NUMPY_REALS)

calculate_gain = torch_fallback.calculate_gain
constant_ = torch_fallback.constant_
ones_ = torch_fallback.ones_
zeros_ = torch_fallback.zeros_
eye_ = torch_fallback.eye_
dirac_ = torch_fallback.dirac_
orthogonal_ = torch_fallback.orthogonal_
sparse_ = torch_fallback.sparse_


# ---- the three primitive fills ------------------------------------------------------------


def new_seed(generator: torch.Generator | None = None) -> Tensor:
    """A fresh 63-bit Philox key from `generator` (default: torch's CPU generator), as the
    one-element int64 CPU tensor the fill ops take. Traceable by torch.compile."""
    if generator is None:  # the common case; device= so that a default device (meta, cuda) cannot move the key
        return torch.randint(0, _MAX_SEED, (), dtype=torch.int64, device=_CPU)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"argument 'generator' must be torch.Generator, not {type(generator).__name__}")
    return torch.randint(0, _MAX_SEED, (), dtype=torch.int64, device=generator.device, generator=generator).cpu()


def _real(value, op: str, name: str, position: int) -> float:
    """A float argument of a fill, taken as torch's argument parser takes one (Python and NumPy
    numbers, SymFloat, SymInt, 0-dim tensors that do not require grad), else its TypeError."""
    if type(value) is float or type(value) is int:  # the common case, without the isinstance checks (~0.3 us)
        return value
    if isinstance(value, _PARSER_REALS) or (isinstance(value, Tensor) and value.dim() == 0 and not value.requires_grad):
        return value
    raise TypeError(f"{op}(): argument '{name}' (position {position}) must be float, not {type(value).__name__}")


def _bound(value, name: str, position: int) -> float:
    """trunc_normal_'s mean, a or b, which torch.nn.init only computes with: any real number,
    one-element tensor or 0-dim NumPy array (mean also passes _real), but a bool tensor, which
    torch cannot subtract."""
    if type(value) is float or type(value) is int:
        return value
    if isinstance(value, Tensor) and value.numel() == 1:
        if value.dtype == torch.bool:
            torch.sub(value, 0)  # raises torch's own error (RuntimeError, NotImplementedError from torch 2.14)
        return value
    if isinstance(value, (numbers.Real, *_PARSER_REALS)):
        return value
    if isinstance(value, ndarray) and value.ndim == 0 and value.dtype.kind in "biuf":
        return value.item()
    raise TypeError(f"trunc_normal_(): argument '{name}' (position {position}) must be float, not {type(value).__name__}")


def _write(op, tensor: Tensor, params: tuple[float, ...], generator: torch.Generator | None) -> Tensor:
    """Fill a tensor `handles()` accepts with fill op `op` and a fresh key. Grad mode is only
    turned off where it matters (the op refuses a grad-mode write to a tensor that requires grad),
    and in eager mode without torch.no_grad()'s context object, which costs ~1 us per call."""
    seed = op_seed(tensor, new_seed(generator))
    if not tensor.requires_grad:
        op(tensor, *params, seed)
    elif torch.compiler.is_compiling():
        with torch.no_grad():
            op(tensor, *params, seed)
    else:
        enabled = torch.is_grad_enabled()
        torch._C._set_grad_enabled(False)
        try:
            op(tensor, *params, seed)
        finally:
            torch._C._set_grad_enabled(enabled)
    return tensor


def _uniform(tensor: Tensor, low: float, high: float, generator: torch.Generator | None) -> Tensor:
    low, high = _real(low, "uniform_", "a", 1), _real(high, "uniform_", "b", 2)
    if handles(tensor):
        return _write(torch.ops.initkit.uniform_fill, tensor, (float(low), float(high)), generator)
    if sharded.handles(tensor):
        sharded.fill(tensor, "uniform", (low, high), generator)
        return tensor
    return torch_fallback.uniform_(tensor, low, high, generator=generator)


def _normal(tensor: Tensor, mean: float, std: float, generator: torch.Generator | None) -> Tensor:
    mean, std = _real(mean, "normal_", "mean", 1), _real(std, "normal_", "std", 2)
    if handles(tensor):
        return _write(torch.ops.initkit.normal_fill, tensor, (float(mean), float(std)), generator)
    if sharded.handles(tensor):
        sharded.fill(tensor, "normal", (mean, std), generator)
        return tensor
    return torch_fallback.normal_(tensor, mean, std, generator=generator)


def _trunc_normal(
    tensor: Tensor, mean: float, std: float, a: float, b: float, generator: torch.Generator | None
) -> Tensor:
    mean, std = _bound(_real(mean, "trunc_normal_", "mean", 1), "mean", 1), _real(std, "trunc_normal_", "std", 2)
    a, b = _bound(a, "a", 3), _bound(b, "b", 4)
    if not std >= 0:  # torch.nn.init.trunc_normal_ silently accepts these and returns garbage
        raise RuntimeError(f"trunc_normal_ expects std >= 0.0, but found std {std}")
    ext = handles(tensor)
    if not (ext or sharded.handles(tensor)):
        return torch_fallback.trunc_normal_(tensor, mean, std, a, b, generator=generator)
    if tensor.is_meta:  # no storage: torch.nn.init returns here, before its warning and any write
        return tensor
    if (mean < a - 2 * std) or (mean > b + 2 * std):
        warnings.warn(
            "mean is more than 2 std from [a, b] in nn.init.trunc_normal_. "
            "The distribution of values may be incorrect.",
            stacklevel=3,
        )
    if ext:
        return _write(torch.ops.initkit.trunc_normal_fill, tensor, (float(mean), float(std), float(a), float(b)), generator)
    sharded.fill(tensor, "trunc_normal", (mean, std, a, b), generator)
    return tensor


_PRIMITIVES = {"uniform": _uniform, "normal": _normal, "trunc_normal": _trunc_normal}


# ---- torch.nn.init surface ------------------------------------------------------------------


def uniform_(tensor: Tensor, a: float = 0.0, b: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    r"""Fill `tensor` in place with values drawn from the uniform distribution :math:`\mathcal{U}(a, b)`.

    Args:
        tensor: an n-dimensional `torch.Tensor`
        a: the lower bound of the uniform distribution
        b: the upper bound of the uniform distribution (exclusive, as torch)
        generator: the torch Generator the Philox key is drawn from (default: torch's CPU generator)

    Returns `tensor`. Equivalent PyTorch: ``torch.nn.init.uniform_``.

    Examples:
        >>> w = torch.empty(3, 5)
        >>> initkit.uniform_(w, -0.1, 0.1)
    """
    # TorchScript compiles torch.nn.init's function, as the torch backend runs it (torch's values): the
    # argument checks and op calls below do not script. Likewise in normal_ and xavier_*.
    if torch.jit.is_scripting():
        return torch_fallback.uniform_(tensor, a, b, generator)
    return _uniform(tensor, a, b, generator)


def normal_(
    tensor: Tensor, mean: float = 0.0, std: float = 1.0, generator: torch.Generator | None = None
) -> Tensor:
    r"""Fill `tensor` in place with values drawn from the normal distribution :math:`\mathcal{N}(\text{mean}, \text{std}^2)`.

    Args:
        tensor: an n-dimensional `torch.Tensor`
        mean: the mean of the normal distribution
        std: the standard deviation of the normal distribution (>= 0)
        generator: the torch Generator the Philox key is drawn from (default: torch's CPU generator)

    Returns `tensor`. Equivalent PyTorch: ``torch.nn.init.normal_``.

    Examples:
        >>> w = torch.empty(3, 5)
        >>> initkit.normal_(w, std=0.02)
    """
    if torch.jit.is_scripting():
        return torch_fallback.normal_(tensor, mean, std, generator)
    return _normal(tensor, mean, std, generator)


def trunc_normal_(
    tensor: Tensor,
    mean: float = 0.0,
    std: float = 1.0,
    a: float = -2.0,
    b: float = 2.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Fill `tensor` in place with values drawn from the normal distribution
    :math:`\mathcal{N}(\text{mean}, \text{std}^2)` truncated to :math:`[a, b]` (absolute bounds, as torch).

    The extension samples the exact truncated law in one pass, for any interval, std and dtype:
    rejection from the normal fill for wide intervals, a uniform or exponential proposal for
    narrow and far-tail ones, the inverse CDF otherwise (chosen per call); no clamping pile-up at
    the bounds and no temporaries.

    Args:
        tensor: an n-dimensional `torch.Tensor`
        mean: the mean of the untruncated normal distribution
        std: the standard deviation of the untruncated normal distribution (>= 0; a negative or
            NaN std raises RuntimeError, which torch does not check)
        a: the minimum cutoff value
        b: the maximum cutoff value ([a, b] must hold a finite value of the dtype; for a
            non-finite mean or std both must be finite in it, as torch; README "Use")
        generator: the torch Generator the Philox key is drawn from (default: torch's CPU generator)

    Returns `tensor`. Equivalent PyTorch: ``torch.nn.init.trunc_normal_``.

    Examples:
        >>> w = torch.empty(768, 768)
        >>> initkit.trunc_normal_(w, std=0.02)
    """
    return _trunc_normal(tensor, mean, std, a, b, generator)


# torch.nn.init's private fan helpers, which model code often calls through the module.
_calculate_fan_in_and_fan_out = schemes.fan_in_and_fan_out
_calculate_correct_fan = schemes.correct_fan


def fill_scheme_(tensor: Tensor, spec: FillSpec, generator: torch.Generator | None = None) -> Tensor:
    """Fill `tensor` as a scheme's FillSpec (initkit.schemes) describes: its primitive random fill
    with the bound or std computed once, a constant, or an orthogonal fill."""
    if spec.kind == "constant":
        return constant_(tensor, spec.params[0])
    if spec.kind == "orthogonal":
        return orthogonal_(tensor, gain=spec.params[0], generator=generator)
    return _PRIMITIVES[spec.kind](tensor, *spec.params, generator)


def _fill_unless_empty(tensor: Tensor, make_spec, generator: torch.Generator | None) -> Tensor:
    # torch.nn.init's Kaiming fills warn and return a zero-element tensor before computing fans
    if 0 in tensor.shape:
        warnings.warn("Initializing zero-element tensors is a no-op", stacklevel=3)
        return tensor
    return fill_scheme_(tensor, make_spec(), generator)


def xavier_uniform_(tensor: Tensor, gain: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    r"""Fill `tensor` in place with Xavier/Glorot uniform values: :math:`\mathcal{U}(-a, a)` with
    :math:`a = \text{gain} \times \sqrt{6 / (\text{fan\_in} + \text{fan\_out})}`.

    Args:
        tensor: an n-dimensional `torch.Tensor` (n >= 2; fans as torch computes them)
        gain: an optional scaling factor (e.g. ``initkit.calculate_gain("tanh")``)
        generator: the torch Generator the Philox key is drawn from (default: torch's CPU generator)

    Returns `tensor`. Equivalent PyTorch: ``torch.nn.init.xavier_uniform_``.

    Examples:
        >>> w = torch.empty(3, 5)
        >>> initkit.xavier_uniform_(w, gain=initkit.calculate_gain("relu"))
    """
    if torch.jit.is_scripting():
        return torch_fallback.xavier_uniform_(tensor, gain, generator)
    return fill_scheme_(tensor, schemes.xavier_uniform(tensor, gain), generator)


def xavier_normal_(tensor: Tensor, gain: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    r"""Fill `tensor` in place with Xavier/Glorot normal values: :math:`\mathcal{N}(0, \text{std}^2)` with
    :math:`\text{std} = \text{gain} \times \sqrt{2 / (\text{fan\_in} + \text{fan\_out})}`.

    Args:
        tensor: an n-dimensional `torch.Tensor` (n >= 2)
        gain: an optional scaling factor
        generator: the torch Generator the Philox key is drawn from (default: torch's CPU generator)

    Returns `tensor`. Equivalent PyTorch: ``torch.nn.init.xavier_normal_``.

    Examples:
        >>> w = torch.empty(3, 5)
        >>> initkit.xavier_normal_(w)
    """
    if torch.jit.is_scripting():
        return torch_fallback.xavier_normal_(tensor, gain, generator)
    return fill_scheme_(tensor, schemes.xavier_normal(tensor, gain), generator)


def kaiming_uniform_(tensor: Tensor, a: float = 0, mode: str = "fan_in", nonlinearity: str = "leaky_relu",
                     generator: torch.Generator | None = None) -> Tensor:  # fmt: skip
    r"""Fill `tensor` in place with Kaiming/He uniform values: :math:`\mathcal{U}(-\text{bound}, \text{bound})`
    with :math:`\text{bound} = \text{gain} \times \sqrt{3 / \text{fan\_mode}}`.

    Args:
        tensor: an n-dimensional `torch.Tensor` (n >= 2)
        a: the negative slope of the rectifier used after this layer (only with "leaky_relu")
        mode: "fan_in" (default) preserves the forward pass's variance, "fan_out" the backward's
        nonlinearity: the name of the nonlinear function (``calculate_gain``'s names);
            "relu" or "leaky_relu" (default) are the recommended ones
        generator: the torch Generator the Philox key is drawn from (default: torch's CPU generator)

    Returns `tensor` (a zero-element tensor is left alone with a warning, as torch).
    Equivalent PyTorch: ``torch.nn.init.kaiming_uniform_``.

    Examples:
        >>> w = torch.empty(3, 5)
        >>> initkit.kaiming_uniform_(w, mode="fan_in", nonlinearity="relu")
    """
    return _fill_unless_empty(tensor, lambda: schemes.kaiming_uniform(tensor, a, mode, nonlinearity), generator)


def kaiming_normal_(tensor: Tensor, a: float = 0, mode: str = "fan_in", nonlinearity: str = "leaky_relu",
                    generator: torch.Generator | None = None) -> Tensor:  # fmt: skip
    r"""Fill `tensor` in place with Kaiming/He normal values: :math:`\mathcal{N}(0, \text{std}^2)` with
    :math:`\text{std} = \text{gain} / \sqrt{\text{fan\_mode}}`.

    Args: as for ``kaiming_uniform_``: `tensor` (n >= 2 dimensions), `a` (the rectifier's negative
    slope, with "leaky_relu"), `mode` ("fan_in" or "fan_out"), `nonlinearity` (a ``calculate_gain``
    name) and `generator` (where the Philox key comes from).

    Returns `tensor` (a zero-element tensor is left alone with a warning, as torch).
    Equivalent PyTorch: ``torch.nn.init.kaiming_normal_``.

    Examples:
        >>> w = torch.empty(3, 5)
        >>> initkit.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")
    """
    return _fill_unless_empty(tensor, lambda: schemes.kaiming_normal(tensor, a, mode, nonlinearity), generator)


# ---- additions: variance scaling (JAX/TF semantics) and LeCun --------------------------------


def variance_scaling_(
    tensor: Tensor,
    scale: float = 1.0,
    mode: str = "fan_in",
    distribution: str = "truncated_normal",
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Fill `tensor` in place with values of variance :math:`\text{scale} / \text{fan}`, as
    ``jax.nn.initializers.variance_scaling``.

    "truncated_normal" draws from :math:`\mathcal{N}(0, s^2)` truncated to :math:`[-2s, 2s]` with
    :math:`s = \sqrt{\text{scale} / \text{fan}} / 0.87962566103423978`, so the samples' variance is exactly
    scale / fan; "normal" from :math:`\mathcal{N}(0, \text{scale} / \text{fan})`; "uniform" from
    :math:`\mathcal{U}(-\sqrt{3\,\text{scale} / \text{fan}}, \sqrt{3\,\text{scale} / \text{fan}})`.

    Args:
        tensor: an n-dimensional `torch.Tensor` (n >= 2; fans as torch computes them)
        scale: the variance scale (> 0)
        mode: "fan_in", "fan_out" or "fan_avg" (their mean)
        distribution: "truncated_normal", "normal" or "uniform"
        generator: the torch Generator the Philox key is drawn from (default: torch's CPU generator)

    Returns `tensor`. Equivalent JAX: ``jax.nn.initializers.variance_scaling(scale, mode, distribution)``.

    Examples:
        >>> w = torch.empty(256, 128)
        >>> initkit.variance_scaling_(w, 2.0, "fan_avg", "uniform")
    """
    spec = schemes.variance_scaling(tensor, scale, mode, distribution)  # validates the arguments
    if tensor.numel() == 0:
        warnings.warn("Initializing zero-element tensors is a no-op", stacklevel=2)
        return tensor
    return fill_scheme_(tensor, spec, generator)


def lecun_normal_(tensor: Tensor, generator: torch.Generator | None = None) -> Tensor:
    r"""Fill `tensor` in place with LeCun normal values (for SELU networks): a truncated normal of
    variance :math:`1 / \text{fan\_in}`, as ``jax.nn.initializers.lecun_normal``
    (``variance_scaling_(tensor, 1.0, "fan_in", "truncated_normal")``).

    Args:
        tensor: an n-dimensional `torch.Tensor` (n >= 2)
        generator: the torch Generator the Philox key is drawn from (default: torch's CPU generator)

    Examples:
        >>> w = torch.empty(64, 32)
        >>> initkit.lecun_normal_(w)
    """
    return variance_scaling_(tensor, 1.0, "fan_in", "truncated_normal", generator)


def lecun_uniform_(tensor: Tensor, generator: torch.Generator | None = None) -> Tensor:
    r"""Fill `tensor` in place with LeCun uniform values: :math:`\mathcal{U}(-\sqrt{3 / \text{fan\_in}}, \sqrt{3 / \text{fan\_in}})`,
    as ``jax.nn.initializers.lecun_uniform``.

    Args:
        tensor: an n-dimensional `torch.Tensor` (n >= 2)
        generator: the torch Generator the Philox key is drawn from (default: torch's CPU generator)

    Examples:
        >>> w = torch.empty(64, 32)
        >>> initkit.lecun_uniform_(w)
    """
    return variance_scaling_(tensor, 1.0, "fan_in", "uniform", generator)


# ---- many tensors at once -------------------------------------------------------------------


def multi_fill_(
    tensors: list[Tensor],
    fills: list[tuple[str, tuple[float, ...]]],
    generator: torch.Generator | None = None,
    *,
    seed: Tensor | None = None,
    first_stream: int = 0,
) -> list[Tensor]:
    r"""Fill many tensors in place in one pass: ``fills[i] = (kind, params)`` for ``tensors[i]``, with
    kind "uniform" :math:`\mathcal{U}(\text{low}, \text{high})` (params low, high), "normal"
    (mean, std) or "trunc_normal" (mean, std, a, b), each the law of the single-tensor fill.

    On the extension this is one parallel region over all tensors (one op call); tensor i gets
    exactly what ``torch.ops.initkit.<kind>_fill(tensors[i], *params, seed, stream=first_stream + i)``
    gives for the one key drawn from `generator`. Tensors the extension does not take (other dtypes,
    and every tensor on the torch backend) get torch's fill, one by one, from `generator`.

    Args:
        tensors: the tensors to fill
        fills: one (kind, params) pair per tensor
        generator: the torch Generator the Philox key is drawn from (default: torch's CPU generator)
        seed: the Philox key to use instead of drawing one (``initkit.init.new_seed()``)
        first_stream: the stream of ``tensors[0]``; to fill one logical list in pieces (e.g. to
            report progress), give every piece the same `seed` and its first tensor's index here

    Returns `tensors`.

    Examples:
        >>> w, b = torch.empty(256, 128), torch.empty(256)
        >>> initkit.multi_fill_([w, b], [("normal", (0.0, 0.02)), ("uniform", (-0.1, 0.1))])
    """
    if len(tensors) != len(fills):
        raise ValueError(f"multi_fill_: got {len(tensors)} tensors but {len(fills)} fills")
    kinds, flat = [], []
    for kind, params in fills:
        flat.extend(op_params(kind, params, "multi_fill_"))
        kinds.append(FILL_KINDS[kind])
    # One op call per device for plain tensors (a model split over devices, meta parameters beside
    # real ones), each tensor keeping its stream, so every tensor gets exactly the values of a
    # single-device call; DTensors fill their shards with the same key and streams; torch fills
    # the rest (dtypes and layouts the kernels do not take, every tensor on the torch backend).
    by_device: dict[torch.device, list[int]] = {}
    dtensors, others = [], []
    for i, tensor in enumerate(tensors):
        if handles(tensor):
            by_device.setdefault(tensor.device, []).append(i)
        else:
            (dtensors if sharded.handles(tensor) else others).append(i)
    if by_device or dtensors:
        for i in dtensors:
            sharded.check_placements(tensors[i])
        key = _draw_key(tensors[dtensors[0]] if dtensors else None, generator) if seed is None else seed
    if len(by_device) + len(dtensors) > 1 or (others and (by_device or dtensors)):
        # Several writes: everything is checked before the first, as the one op call checks it (the
        # key and the parameters, by that op on empty tensors of the same dtypes).
        ours = sorted(i for rows in (*by_device.values(), dtensors) for i in rows)
        empties = [torch.empty(0, dtype=tensors[i].dtype, device=_CPU) for i in ours]
        params = [p for i in ours for p in flat[4 * i : 4 * i + 4]]
        torch.ops.initkit.multi_fill(empties, [kinds[i] for i in ours], params, key, [first_stream + i for i in ours])
    for i in others:
        _PRIMITIVES[fills[i][0]](tensors[i], *fills[i][1], generator)
    with torch.no_grad():
        for rows in by_device.values():
            torch.ops.initkit.multi_fill(
                [tensors[i] for i in rows],
                [kinds[i] for i in rows],
                [p for i in rows for p in flat[4 * i : 4 * i + 4]],
                op_seed(tensors[rows[0]], key),
                [first_stream + i for i in rows],
            )
    for i in dtensors:
        kind, params = fills[i]
        sharded.fill(tensors[i], kind, params, None, seed=key, stream=first_stream + i)
    return tensors


def _draw_key(dtensor: Tensor | None, generator: torch.Generator | None) -> Tensor:
    """multi_fill_'s one key, from `generator`: shared by the ranks of the mesh of `dtensor` (the
    list's first DTensor), if any."""
    return new_seed(generator) if dtensor is None else sharded.shared_key(dtensor, generator)


def multi_fill_key(tensors: list[Tensor], generator: torch.Generator | None) -> Tensor | None:
    """The key multi_fill_ draws for `tensors`; None when the extension takes none of them (torch fills all)."""
    dtensors = [t for t in tensors if sharded.handles(t)]
    if dtensors:
        return _draw_key(dtensors[0], generator)
    return _draw_key(None, generator) if any(handles(t) for t in tensors) else None


# ---- deprecated aliases ---------------------------------------------------------------------


def _make_deprecate(meth):
    new_name = meth.__name__
    old_name = new_name[:-1]

    def deprecated_init(*args, **kwargs):
        warnings.warn(
            f"`nn.init.{old_name}` is now deprecated in favor of `nn.init.{new_name}`.", FutureWarning, stacklevel=2
        )
        return meth(*args, **kwargs)

    deprecated_init.__name__ = old_name
    deprecated_init.__doc__ = f"Deprecated alias of {new_name}."
    return deprecated_init


uniform = _make_deprecate(uniform_)
normal = _make_deprecate(normal_)
constant = _make_deprecate(constant_)
eye = _make_deprecate(eye_)
dirac = _make_deprecate(dirac_)
xavier_uniform = _make_deprecate(xavier_uniform_)
xavier_normal = _make_deprecate(xavier_normal_)
kaiming_uniform = _make_deprecate(kaiming_uniform_)
kaiming_normal = _make_deprecate(kaiming_normal_)
orthogonal = _make_deprecate(orthogonal_)
sparse = _make_deprecate(sparse_)
