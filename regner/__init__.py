"""regner: GlobalPointer Chinese NER with honest regularizer comparisons."""

__version__ = "0.1.0"
