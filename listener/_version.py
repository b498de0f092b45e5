"""The version, in a module of its own so any module can name it without an import cycle."""

__version__ = "0.1.0"
