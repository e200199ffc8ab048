"""The numerical core: GES channel selection and least-squares refit. Pure NumPy/SciPy, no ONNX."""
