"""lns: an L2TP Network Server (RFC 2661) on Twisted."""

# The one place the version is written: pyproject.toml reads it from here.
__version__ = "0.1.0"
