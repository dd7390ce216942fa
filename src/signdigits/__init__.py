"""signdigits: a reproducible DVC pipeline of PyTorch networks (fully connected, a small CNN) for hand-sign digits."""

__version__ = "0.1.0"
