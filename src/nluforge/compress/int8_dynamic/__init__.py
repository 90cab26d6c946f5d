"""``int8_dynamic``: 8-bit weights for linear layers and embedding tables (see ``quantize.py``)."""
