"""Training: the network and its file format, the one engine, a training stage's body, the sweep."""
