"""``random_masks``: the best of several random unstructured masks at a target sparsity (see ``prune.py``)."""
