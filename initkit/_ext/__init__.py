"""The extension plumbing: loading initkit._C (load.py), the backend switch and the one predicate
that decides whether the extension handles a tensor (backend.py), the fake kernels torch.compile and
torch.export trace with (fake_kernels.py), the fill ops' kinds and parameters as their schemas
define them (fill_ops.py), the dense ops' argument checks shared by the fakes and the
fallback (checks.py), and the pure-PyTorch fallback for the fills (torch_fallback.py)."""
