"""Atomic file writes: results and checkpoints are never left half-written.

Every writer goes to a temporary file in the target's folder, flushes and fsyncs it, then renames
it over the target (``os.replace`` is atomic on POSIX and Windows within one file system).
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _umask() -> int:
    # os.umask can only be read by setting it; set it straight back.
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _default_mode() -> int:
    """The mode ``open()`` gives a new file: 0o666 minus the user's umask (mkstemp's files are
    0o600, which collaborators on a shared server cannot read)."""
    return 0o666 & ~_umask()


@contextmanager
def _atomic_file(path: Path, mode: str = "wb") -> Any:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, _default_mode())
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with _suppress():
            os.unlink(tmp)
        raise


@contextmanager
def _suppress() -> Any:
    try:
        yield
    except OSError:
        pass


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    with _atomic_file(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def atomic_torch_save(obj: Any, path: Path) -> Path:
    import torch

    with _atomic_file(path, "wb") as f:
        torch.save(obj, f)
    return Path(path)


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    with Path(path).open(newline="") as f:
        return list(csv.DictReader(f))


def write_csv_rows_atomic(
    path: Path, rows: Iterable[Mapping[str, Any]], fieldnames: Sequence[str]
) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fieldnames), restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    return atomic_write_text(path, buffer.getvalue())


def atomic_save_nifti(image: Any, path: Path) -> Path:
    """Save a nibabel image atomically (``.nii.gz`` compressed by extension)."""
    import nibabel as nib

    path = Path(path)
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else ".nii"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, _default_mode())
    try:
        nib.save(image, tmp)
        os.replace(tmp, path)
    except BaseException:
        with _suppress():
            os.unlink(tmp)
        raise
    return path


__all__ = [
    "atomic_save_nifti",
    "atomic_torch_save",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "read_csv_rows",
    "write_csv_rows_atomic",
]
