"""The resolved Hydra config: where conf/ is, and its validation before any data is read."""
