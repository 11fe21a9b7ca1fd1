"""cadlab: the helper package behind the course notebooks (one module per notebook idea)."""

__version__ = "0.1.0"
