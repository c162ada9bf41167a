"""Errors the command line turns into a one-line message and exit code 2."""

from __future__ import annotations


class LGMRecError(Exception):
    """Base class of errors caused by the user's input (not by a bug)."""


class DataError(LGMRecError):
    """A dataset file is missing or malformed; the message names the file and the problem."""


class ConfigError(LGMRecError):
    """A configuration value is unknown or out of range."""
