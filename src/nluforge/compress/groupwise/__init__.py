"""``groupwise``: k-bit weights with a scale and offset per group of weights, bit-packed (see ``quantize.py``)."""
