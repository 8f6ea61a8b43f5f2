"""Model-level tools: init policies and plans (policy.py), which activation follows each layer
(activations.py), applying a plan with one multi-tensor fill (apply.py), allocating and filling a
meta-device model (materialize.py), torchinfo-style summaries (summary.py), signal-propagation
diagnostics and LSUV (diagnose.py), Linear+ReLU fusion (fuse.py) and the text tables they print
(table.py)."""
