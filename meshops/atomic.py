"""Write outputs under a temporary name and rename them into place, so a crash never leaves half a file.

Every writer in the package goes through these two context managers: they refuse to replace an
existing output unless asked, and remove the temporary on any error.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _check_target(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True (--overwrite) to replace it")
    if not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)


def check_dir_target(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Refuse what ``atomic_dir`` would refuse, so that a caller can fail before the work that fills
    the directory: unless ``overwrite``, an existing file or a non-empty directory at ``path``."""
    path = Path(path)
    if path.exists() and not overwrite:
        if not path.is_dir():
            raise FileExistsError(f"{path} already exists and is not a directory; "
                                  f"pass overwrite=True (--overwrite) to replace it")
        if any(path.iterdir()):
            raise FileExistsError(f"{path} already exists and is not empty; "
                                  f"pass overwrite=True (--overwrite) to replace it")
    return path


@contextmanager
def atomic_file(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed to ``path``.

    The temporary keeps ``path``'s suffix so that writers choosing a format by extension work.
    """
    path = Path(path)
    _check_target(path, overwrite)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        tmp.chmod(0o666 & ~_umask())  # mkstemp makes it private; the output should not be
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``path``; on success it replaces ``path``.

    An existing non-empty ``path`` is refused unless ``overwrite``; an empty one is taken over.
    """
    path = check_dir_target(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        tmp.chmod(0o777 & ~_umask())
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
