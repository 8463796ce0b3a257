"""Errors a user can act on: each names the file and, where there is one, the line."""

from __future__ import annotations


class RerankforgeError(Exception):
    """Base class for errors reported to the user without a traceback."""


class DataFormatError(RerankforgeError, ValueError):
    """Malformed input. ``str(err)`` reads ``path:line: message``."""

    def __init__(self, path, line: int | None, message: str):
        self.path = str(path)
        self.line = line
        self.message = message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class ConfigError(RerankforgeError, ValueError):
    """Invalid configuration value or combination."""
