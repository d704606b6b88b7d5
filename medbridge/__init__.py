"""The composition root: settings, the `medbridge` command, assembling the server."""

__version__ = "0.1.0"
