"""``structured``: remove attention heads and FFN neurons ranked by Fisher importance (see ``prune.py``)."""
