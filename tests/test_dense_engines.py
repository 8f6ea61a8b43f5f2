"""The CPU dense ops on each GEMM engine (csrc/cpu/dense_gemm.h): MKL, oneDNN, initkit's own
AVX-512 or AVX2 kernel, and the per-shape choice between them, against F.relu(F.linear(...)): values, gradients, NaN/inf
semantics, strides, bfloat16, and inference weights packed while their version is unchanged.
Each engine is pinned with INITKIT_CPU_GEMM in a child process (the choice is made once per
process)."""

import textwrap

import pytest
import torch
import torch.nn.functional as F

import initkit
from initkit.functional import linear_relu, mlp
from helpers import run_python

CHECKS = textwrap.dedent(
    """
    import torch, torch.nn.functional as F
    import initkit
    from initkit.functional import linear_relu, mlp
    torch.manual_seed(0)

    def ref(x, w, b):
        return F.relu(F.linear(x, w, b))

    def same(a, b, tol):
        assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, b.shape, a.dtype, b.dtype)
        assert torch.equal(a.isnan(), b.isnan()), "NaN pattern differs"
        torch.testing.assert_close(a, b, rtol=tol, atol=tol, equal_nan=True)

    for m, k, n in [(256, 256, 256), (32, 1024, 512), (64, 300, 70), (4096, 64, 256), (13, 17, 100), (2, 300, 333)]:
        x, w, b = torch.randn(m, k), torch.randn(n, k) / k**0.5, torch.randn(n)
        same(linear_relu(x, w, b), ref(x, w, b), 1e-4)
        same(linear_relu(x, w), ref(x, w, None), 1e-4)
        xt = x.t().contiguous().t()  # column-major input, transposed weight
        same(linear_relu(xt, w.t().contiguous().t(), b), ref(x, w, b), 1e-4)
        # NaN and inf: NaN stays NaN (oneDNN's ReLU post-op would give 0), -inf -> 0, +inf stays
        xs, bs = x.clone(), b.clone()
        xs[0, 0] = float("nan"); xs[1, :] = float("inf"); bs[2] = -float("inf"); bs[3] = float("nan")
        same(linear_relu(xs, w, bs), ref(xs, w, bs), 1e-4)
        with torch.no_grad():
            same(linear_relu(xs, w, bs), ref(xs, w, bs), 1e-4)
        # gradients
        xg, wg, bg = (t.clone().requires_grad_() for t in (x, w, b))
        xr, wr, br = (t.clone().requires_grad_() for t in (x, w, b))
        g = torch.randn(m, n)
        (linear_relu(xg, wg, bg) * g).sum().backward()
        (ref(xr, wr, br) * g).sum().backward()
        for ours, theirs in ((xg, xr), (wg, wr), (bg, br)):
            same(ours.grad, theirs.grad, 1e-3)
        # bfloat16: within twice torch's own error in bf16 (+ a rounding floor)
        truth = ref(x, w, b)
        err = (linear_relu(x.bfloat16(), w.bfloat16(), b.bfloat16()).float() - truth).abs().max()
        err_torch = (ref(x.bfloat16(), w.bfloat16(), b.bfloat16()).float() - truth).abs().max()
        assert err <= 2 * err_torch + 1e-2, (err, err_torch)

    # a strided bias (a view with steps: oneDNN's inner product would ignore its strides)
    for m, k, n in [(64, 64, 64), (896, 31, 33), (2, 300, 333)]:
        x, w = torch.randn(m, k), torch.randn(n, k) / k**0.5
        b = torch.randn(2 * n)[::2]
        same(linear_relu(x, w, b), ref(x, w, b), 1e-4)
        with torch.no_grad():
            same(linear_relu(x, w, b), ref(x, w, b), 1e-4)
        w2, b2 = torch.randn(5, n), torch.randn(10)[::2]
        same(mlp(x, [w, w2], [b, b2]), F.linear(ref(x, w, b), w2, b2), 1e-4)
    # tiny layers in every floating dtype (direct loops forward and backward): values and
    # gradients within twice torch's own error against float64 (+ a rounding floor)
    for dtype, floor in ((torch.float32, 1e-5), (torch.bfloat16, 1e-2), (torch.float16, 2e-3)):
        for m, k, n in [(1, 64, 64), (2, 16, 8), (1, 256, 256), (3, 5, 7)]:
            x64, w64, b64 = torch.randn(m, k, dtype=torch.float64), torch.randn(n, k, dtype=torch.float64) / k**0.5, torch.randn(n, dtype=torch.float64)
            g64 = torch.randn(m, n, dtype=torch.float64)
            def run(fn, dtype):
                x, w, b = (t.clone().to(dtype).requires_grad_() for t in (x64, w64, b64))
                out = fn(x, w, b)
                out.backward(g64.to(dtype))
                return [t.double() for t in (out, x.grad, w.grad, b.grad)]
            exact = run(ref, torch.float64)
            ours, theirs = run(linear_relu, dtype), run(ref, dtype)
            for o, t, e in zip(ours, theirs, exact):
                assert (o - e).abs().max() <= 2 * (t - e).abs().max() + floor, (dtype, m, k, n)
    # a weight whose shape changes through .data (the version counter stays): not the old packing
    for rows in (1, 64):
        wd = torch.randn(64, 256)
        with torch.no_grad():
            linear_relu(torch.randn(rows, 256), wd)
            wd.data = wd.data.view(128, 128)
            xd = torch.randn(rows, 128)
            same(linear_relu(xd, wd), ref(xd, wd, None), 1e-4)
            w1, w2 = torch.randn(64, 32), torch.randn(16, 64)
            xm = torch.randn(rows, 32)
            mlp(xm, [w1, w2], [None, None])
            w2.data = w2.data.view(32, 32)
            w1.data = w1.data[:32]
            same(mlp(xm, [w1, w2], [None, None]), F.linear(ref(xm, w1, None), w2), 1e-4)

    # mlp forward and backward
    sizes = [256, 512, 256, 10]
    ws = [torch.randn(o, i) / i**0.5 for i, o in zip(sizes[:-1], sizes[1:])]
    bs = [torch.randn(o) for o in sizes[1:]]
    x = torch.randn(64, 256)
    def ref_mlp(x, ws, bs):
        for i, (w, b) in enumerate(zip(ws, bs)):
            x = F.linear(x, w, b)
            x = F.relu(x) if i + 1 < len(ws) else x
        return x
    same(mlp(x, ws, bs), ref_mlp(x, ws, bs), 1e-4)
    wg = [w.clone().requires_grad_() for w in ws]; wr = [w.clone().requires_grad_() for w in ws]
    mlp(x, wg, bs).square().sum().backward(); ref_mlp(x, wr, bs).square().sum().backward()
    for a, b_ in zip(wg, wr):
        same(a.grad, b_.grad, 1e-3)
    # mlp inference (weights packed; in float32 with AVX-512 or AVX2 possibly the whole MLP in one parallel
    # region, rows split across threads): NaN/inf, a missing bias, strided and 3-D inputs, odd row
    # counts, repeated calls, an in-place weight update
    with torch.no_grad():
        for rows in (64, 1, 7, 100):
            xs = torch.randn(rows, 256)
            xs[0, 0] = float("nan"); xs[-1, 1] = float("inf")
            bn = [bs[0], None, bs[2]]
            first = mlp(xs, ws, bn)
            same(first, ref_mlp(xs, ws, bn), 1e-4)
            assert torch.equal(mlp(xs, ws, bn).nan_to_num(), first.nan_to_num())
            same(mlp(xs.t().contiguous().t(), ws, bn), first, 1e-4)
            same(mlp(xs.view(1, rows, 256), ws, bn), first.view(1, rows, 10), 1e-4)
        ws[1].mul_(-1)
        same(mlp(x, ws, bs), ref_mlp(x, ws, bs), 1e-4)

    # inference: packed weights are reused while unchanged, repacked when the weight changes
    layer = initkit.nn.FusedLinearReLU(512, 512)
    x = torch.randn(64, 512)
    with torch.no_grad():
        first = layer(x)
        same(layer(x), first, 0)
        same(first, ref(x, layer.weight, layer.bias), 1e-4)
        layer.weight.mul_(-1)  # bumps the version counter
        same(layer(x), ref(x, layer.weight, layer.bias), 1e-4)
        layer.weight.copy_(torch.randn(512, 512))
        small = torch.randn(3, 512)  # another batch size reuses the packed weight
        same(layer(small), ref(small, layer.weight, layer.bias), 1e-4)
        same(layer(x), ref(x, layer.weight, layer.bias), 1e-4)
        layer.load_state_dict({"weight": torch.randn(512, 512), "bias": torch.randn(512)})
        same(layer(x), ref(x, layer.weight, layer.bias), 1e-4)
        row = torch.randn(1, 256)  # single rows: a GEMV on the cached panels where the CPU has AVX-512 or AVX2
        gemv = initkit.nn.FusedLinearReLU(256, 256)
        same(gemv(row), ref(row, gemv.weight, gemv.bias), 1e-4)
        gemv.weight.mul_(-1)
        same(gemv(row), ref(row, gemv.weight, gemv.bias), 1e-4)
        for _ in range(300):  # many short-lived weights: the cache stays bounded and valid
            w = torch.randn(256, 256)
            same(linear_relu(x[:, :256], w), ref(x[:, :256], w, None), 1e-4)
    print("ok")
    """
)


@pytest.mark.parametrize("engine", ["mkl", "onednn", "initkit", "auto"])
def test_engine_matches_torch(ext, engine):
    # From an empty directory (run_python): the installed initkit, with its _C, not the source tree.
    proc = run_python(CHECKS, {"INITKIT_CPU_GEMM": engine, "INITKIT_REQUIRE_EXT": "1"}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "ok"


OWN_KERNEL_BITS = textwrap.dedent(
    """
    import os, torch
    import initkit
    from initkit.functional import linear_relu, mlp
    torch.manual_seed(0)
    out = []
    # partial panels (n % 32: 10, 70, 333), 1..6-row tiles and their splits, strided operands
    for m, k, n in [(1, 256, 256), (7, 100, 70), (13, 17, 10), (64, 300, 333), (50, 64, 96)]:
        x, w, b = torch.randn(m, k), torch.randn(n, k) / k**0.5, torch.randn(n)
        with torch.no_grad():
            out += [linear_relu(x, w, b), linear_relu(x.t().contiguous().t(), w, None)]
        xg, wg, bg = (t.clone().requires_grad_() for t in (x, w, b))
        (linear_relu(xg, wg, bg) * torch.randn(m, n)).sum().backward()
        out += [xg.grad, wg.grad, bg.grad]
    ws = [torch.randn(o, i) / i**0.5 for i, o in [(160, 192), (192, 192), (192, 10)]]
    with torch.no_grad():
        out.append(mlp(torch.randn(48, 160), ws, [torch.randn(192), None, torch.randn(10)]))
    torch.save(out, os.environ["OUT"])
    """
)


def test_own_kernel_same_bits_on_every_level(ext, tmp_path):
    """initkit's own GEMM sums each output alike on AVX-512 and on AVX2 (INITKIT_CPU_KERNELS=avx2
    runs the AVX2 tile on an AVX-512 CPU): the same bits, forward and backward, at every level the
    CPU has. (On a CPU with AVX2 only, both runs take the AVX2 tile.)"""
    results = []
    for env in ({}, {"INITKIT_CPU_KERNELS": "avx2"}):
        path = tmp_path / f"own{len(results)}.pt"
        proc = run_python(OWN_KERNEL_BITS, {**env, "INITKIT_CPU_GEMM": "initkit", "INITKIT_REQUIRE_EXT": "1",
                                            "OUT": str(path)}, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        results.append(torch.load(path))
    for a, b in zip(*results):
        assert torch.equal(a.view(torch.int32), b.view(torch.int32))


def test_inference_after_training_step(ext):
    """A weight trained in place between no_grad calls is seen by the next call."""
    torch.manual_seed(0)
    layer = initkit.nn.FusedLinearReLU(256, 256)
    opt = torch.optim.SGD(layer.parameters(), lr=0.5)
    x = torch.randn(128, 256)
    for _ in range(3):
        with torch.no_grad():
            torch.testing.assert_close(layer(x), F.relu(F.linear(x, layer.weight, layer.bias)), rtol=1e-4, atol=1e-4)
        layer(x).sum().backward()
        opt.step()
        opt.zero_grad()


def test_mlp_inference_matches(ext):
    torch.manual_seed(0)
    model = initkit.nn.MLP([256, 256, 256, 10]).eval()
    x = torch.randn(64, 256)
    with torch.no_grad():
        out = model(x)
        for layer in model.layers:
            x = F.linear(x, layer.weight, layer.bias)
            x = F.relu(x) if layer is not model.layers[-1] else x
    torch.testing.assert_close(out, x, rtol=1e-4, atol=1e-4)


def test_engine_choice_is_kept_per_shape(ext):
    """The first call of a shape calibrates; later calls reuse its engine, so they give the same bits
    (the engines round differently: a re-calibration that picked another one would show)."""
    torch.manual_seed(0)
    x, w, b = torch.randn(96, 320), torch.randn(288, 320) / 320**0.5, torch.randn(288)
    for grad in (False, True):  # inference and training calls are calibrated apart
        with torch.set_grad_enabled(grad):
            wg = w.clone().requires_grad_(grad)
            first = linear_relu(x, wg, b)
            for _ in range(3):
                assert torch.equal(linear_relu(x, wg, b), first)


ROWS_BITS = textwrap.dedent(
    """
    import torch
    import initkit
    from initkit.functional import linear_relu, mlp
    torch.manual_seed(0)
    sizes = [256, 256, 256, 10]
    ws = [torch.randn(o, i) / i**0.5 for i, o in zip(sizes[:-1], sizes[1:])]
    bs = [torch.randn(o) for o in sizes[1:]]
    for rows in (64, 37, 200):
        x = torch.randn(rows, 256)
        with torch.no_grad():
            outs = []
            for threads in (1, 2, 3):
                torch.set_num_threads(threads)
                outs.append(mlp(x, ws, bs))
            h = x
            for i, (w, b) in enumerate(zip(ws, bs)):
                h = linear_relu(h, w, b) if i + 1 < len(ws) else torch.ops.initkit.mlp(h, [w], [b])
        for out in outs:
            assert torch.equal(out, outs[0])
        assert torch.equal(h, outs[0])
    print("ok")
    """
)


def test_mlp_rows_split_same_bits(ext):
    """On initkit's own kernel the whole-MLP inference path (rows split across threads, one parallel
    region) gives the bits of the layer-by-layer own kernel, for any thread count."""
    proc = run_python(ROWS_BITS, {"INITKIT_CPU_GEMM": "initkit", "INITKIT_REQUIRE_EXT": "1"}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "ok"


def test_mlp_engine_choice_is_kept(ext):
    """An MLP shape's first inference call calibrates (whole-MLP path or layer by layer); later calls
    give the same bits."""
    torch.manual_seed(0)
    ws = [torch.randn(192, 160) / 160**0.5, torch.randn(192, 192) / 192**0.5, torch.randn(10, 192)]
    bs = [torch.randn(192), None, torch.randn(10)]
    x = torch.randn(48, 160)
    with torch.no_grad():
        first = mlp(x, ws, bs)
        for _ in range(3):
            assert torch.equal(mlp(x, ws, bs), first)
