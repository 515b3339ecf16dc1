"""Errors raised by r1_core.data readers: every message names the file, the record and the field.

    raise DataFormatError(path, "expected a list of records, got dict", record=3, field="object_id")
"""
from __future__ import annotations

from pathlib import Path


class DataFormatError(ValueError):
    """A dataset file is missing or malformed. `str(e)` reads
    `<file>: record <i>: field '<name>': <what was expected, what came>`."""

    def __init__(self, path: str | Path, message: str, record: int | None = None, field: str | None = None):
        self.path = str(path)
        self.record = record
        self.field = field
        where = self.path
        if record is not None:
            where += f": record {record}"
        if field is not None:
            where += f": field {field!r}"
        super().__init__(f"{where}: {message}")


def require_file(path: str | Path, what: str) -> Path:
    """Return `path` as a Path, or raise DataFormatError saying which dataset file is missing."""
    p = Path(path)
    if not p.is_file():
        raise DataFormatError(p, f"missing {what} file (expected it at this path)")
    return p
