"""Datasets as plain Python: examples are (text, character spans), whatever the file format."""

from regner.data.errors import DataError
from regner.data.types import Entity, Example

__all__ = ["DataError", "Entity", "Example"]
