"""Run directories and what they hold, at the ground of every layer (docs/ARCHITECTURE.md)."""
