"""signdigits: a reproducible DVC pipeline of fully-connected networks for hand-sign digits."""

__version__ = "0.1.0"
