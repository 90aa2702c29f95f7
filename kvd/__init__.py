"""kvd: the kv daemon."""

__version__ = "0.1.0"
