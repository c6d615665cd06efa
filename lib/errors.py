"""The root of Backbeat's typed errors.

Every error Backbeat raises on purpose derives from :class:`BackbeatError`, so callers (and the
function adapters, which turn errors into retry or dead-letter) can tell "our own, explained"
failures from bugs.
"""

from __future__ import annotations


class BackbeatError(Exception):
    """Base class of every error Backbeat raises deliberately."""


class ConfigError(BackbeatError):
    """A setting, manifest or argument is missing or invalid; the message names it."""
