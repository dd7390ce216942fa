"""signdigits: a reproducible DVC pipeline of fully-connected networks for hand-sign digits."""

__version__ = "0.1.0"

# Bumped whenever the layout of prepared data, split files or model files changes, so that
# stale files from an older pipeline fail with a clear message instead of a confusing one.
FORMAT_VERSION = 1
