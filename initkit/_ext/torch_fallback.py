"""The pure-PyTorch backend: torch.nn.init's own functions, captured when initkit is imported.

Capturing (rather than looking `torch.nn.init.X` up at call time) keeps initkit working when a
user has monkey-patched torch.nn.init.X = initkit.X: the fallback never calls itself.
"""

import torch.nn.init as _nn_init

calculate_gain = _nn_init.calculate_gain
uniform_ = _nn_init.uniform_
normal_ = _nn_init.normal_
trunc_normal_ = _nn_init.trunc_normal_
constant_ = _nn_init.constant_
ones_ = _nn_init.ones_
zeros_ = _nn_init.zeros_
eye_ = _nn_init.eye_
dirac_ = _nn_init.dirac_
orthogonal_ = _nn_init.orthogonal_
sparse_ = _nn_init.sparse_
xavier_uniform_ = _nn_init.xavier_uniform_
xavier_normal_ = _nn_init.xavier_normal_
kaiming_uniform_ = _nn_init.kaiming_uniform_
kaiming_normal_ = _nn_init.kaiming_normal_
