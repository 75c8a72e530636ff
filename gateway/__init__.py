"""hall-gateway: the edge gateway of a government service hall."""

__version__ = "0.1.0"
CONTRACT_VERSION = 1
