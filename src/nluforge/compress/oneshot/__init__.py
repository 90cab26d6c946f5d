"""oneshot: Kwon et al. 2022 post-training structured pruning (see prune.py)."""
