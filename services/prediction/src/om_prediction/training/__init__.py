"""Offline training: point-in-time dataset (`dataset`), evaluation against the market price (`evaluate`),
the training run with its report (`pipeline`)."""
