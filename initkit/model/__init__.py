"""Model-level tools: a model's own init recorded at construction and replayed as one fused pass
(recording.py records, deferred.py: deferred_init and materialize of recipes, patch.py: patch()),
init policies and plans (policy.py), which activation follows each layer
(activations.py), applying a plan with one multi-tensor fill (apply.py), allocating and filling a
meta-device model (materialize.py), torchinfo-style summaries (summary.py), signal-propagation
diagnostics and LSUV (diagnose.py), Linear+ReLU fusion (fuse.py) and the text tables they print
(table.py)."""
