"""Files only this account may read: the SQLite database (it holds the sealed signing keys and
every account), the development mail sink (reset links) and rendered configs under var/.

Directories are 0700 and files 0600 whatever the umask; a file or directory of ours that
already exists with looser bits (made by an older version) is tightened.
"""

from __future__ import annotations

import os
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path, *, tighten: bool = True) -> Path:
    """Create `path` (and missing parents) owner-only; with `tighten`, chmod it if it exists.
    Parents that exist already are left alone: they may be shared (/tmp, a home)."""
    for parent in reversed([path, *path.parents]):
        if not parent.exists():
            parent.mkdir(mode=DIR_MODE)
            os.chmod(parent, DIR_MODE)  # mkdir's mode is filtered by the umask
    if tighten:
        os.chmod(path, DIR_MODE)
    return path


def private_file(path: Path) -> Path:
    """Make sure `path` exists, owner-only (created empty if missing, chmod'ed if not).

    An existing file is never opened: closing any descriptor of a file drops every POSIX lock
    this process holds on it, and SQLite's locks on a database this process has open are
    exactly such locks (opening and closing it here corrupted a live connection's view)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        os.chmod(path, FILE_MODE)
        return path
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return path


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` owner-only: a temporary file beside it, renamed over it, so a
    reader never sees half a file and no moment exists where the data is world-readable."""
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        _write_all(fd, data)
    finally:
        os.close(fd)
    os.replace(temporary, path)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
