"""hessian_mixed: Q-BERT Hessian-aware mixed-precision group-wise quantization (see quantize.py)."""
