"""Fake (meta) kernels for torch.compile and torch.export.

Imported by initkit._load only after initkit._C registered the ops; its module name is the one
named by m.set_python_module() in csrc/initkit.cpp. The fills mutate in place and return
nothing, so their fakes only have to accept the arguments.
"""

import torch


@torch.library.register_fake("initkit::uniform_fill")
def _uniform_fill_fake(self, low, high, seed, stream=0, offset=0):
    return None


@torch.library.register_fake("initkit::normal_fill")
def _normal_fill_fake(self, mean, std, seed, stream=0, offset=0):
    return None


@torch.library.register_fake("initkit::trunc_normal_fill")
def _trunc_normal_fill_fake(self, mean, std, a, b, seed, stream=0, offset=0):
    return None


@torch.library.register_fake("initkit::multi_fill")
def _multi_fill_fake(tensors, kinds, params, seed, streams):
    return None
