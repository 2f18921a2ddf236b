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
