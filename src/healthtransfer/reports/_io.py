"""Atomic output: a run writes everything into a temporary folder beside the destination and
moves the files into place only once all of them exist, so a failed run leaves nothing
half-written."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["atomic_output_dir", "atomic_write_text", "atomic_write_bytes", "replace_path"]


def atomic_write_bytes(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync, then rename it over ``path``:
    a reader sees the old file or the new one, never half of it. The file is created 0600
    (mkstemp) and set to ``mode`` before the rename when given (e.g. 0o644 for a public key)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def replace_path(new: Path, dest: Path) -> None:
    """Move ``new`` onto ``dest``; an existing folder is swapped out first (a folder cannot be
    replaced by rename) and removed only once ``new`` is in place."""
    new, dest = Path(new), Path(dest)
    if dest.is_dir() and not dest.is_symlink():
        old = dest.parent / f".old-{dest.name}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dest, old)
        os.replace(new, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, dest)


@contextlib.contextmanager
def atomic_output_dir(out: Path):
    """Yield a staging folder; on success its entries replace those of the same name in
    ``out``; on failure the staging folder is removed and ``out`` is left as it was."""
    out = Path(out)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".staging-", dir=out))
    try:
        yield stage
        for entry in stage.iterdir():
            replace_path(entry, out / entry.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if created and not any(out.iterdir()):
            out.rmdir()
