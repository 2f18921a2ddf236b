"""Exceptions raised by gsu. All are ``ValueError`` subclasses so callers may catch broadly."""

from __future__ import annotations


class GsuError(ValueError):
    """Base class for gsu input and data errors."""


class DataFormatError(GsuError):
    """A data file is malformed: wrong suffix, ragged rows, bad dtype, NaN/inf, empty...

    The message always names the file.
    """


class IndexFileError(GsuError):
    """An index (or other gsu container) file is truncated, altered or of an unknown version.

    The message always names the file.
    """


class LimitError(GsuError):
    """A request over a per-call cap (``k``, result size): see :func:`gsu.set_limits`."""


class FieldError(GsuError):
    """One field of a saved file is inconsistent (raised by load validators; the loader
    turns it into an :class:`IndexFileError` that also names the file).

    Attributes:
        field: what was checked, e.g. ``"array 'list_offsets'"`` or ``"config 'dim'"``.
        reason: what is wrong with it.
    """

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
