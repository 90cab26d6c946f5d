"""``magnitude``: unstructured magnitude pruning to a target sparsity, stored sparse (see ``prune.py``)."""
