"""PyTorch adapter, importable as ``invconv_cupy.torch`` (autograd ops and flow layers)."""
