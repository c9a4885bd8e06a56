"""imrs: a DNS root server instance written in Python."""

__version__ = "0.1.0"
