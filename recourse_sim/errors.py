"""User-facing error types.

Every error raised for bad input names the offending field, the value received and what is allowed, so a
user can fix a scenario file without reading a traceback.
"""

from __future__ import annotations

from typing import Any


class RecourseSimError(ValueError):
    """Base class for all input errors raised by recourse_sim."""


class ConfigError(RecourseSimError):
    """A scenario, CLI argument or constructor argument is invalid."""

    def __init__(self, field: str, value: Any, allowed: str) -> None:
        self.field, self.value, self.allowed = field, value, allowed
        super().__init__(f"{field}: got {value!r}; allowed: {allowed}")


class DataError(RecourseSimError):
    """A dataset is malformed (NaN, constant columns, wrong shapes, missing target...)."""
