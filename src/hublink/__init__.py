"""hublink: links an on-premise shop Hub to its Cloud."""

__version__ = "0.1.0"
