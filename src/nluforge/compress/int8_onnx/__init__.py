"""int8_onnx: ONNX export + onnxruntime dynamic int8 quantization (see quantize.py)."""
