"""A small on-disk cache for arrays derived from a mesh (spirals, decimation hierarchies).

Entries are named by a sha256 of everything they depend on, written atomically, and read without
pickle. A file that cannot be read back (truncated, corrupt, wrong shape) is recomputed and
replaced with a warning rather than failing the caller; so is an unwritable cache directory,
where the computed value is returned uncached.
"""
from __future__ import annotations

import hashlib
import os
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

from meshops.atomic import atomic_file

T = TypeVar("T")

# What a damaged .npy/.npz or a failed validation raises: np.load gives OSError/ValueError/EOFError
# (BadZipFile for .npz), a missing array gives KeyError, and the validators raise ValueError.
_UNREADABLE = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)


def default_cache_dir(kind: str) -> Path:
    """``$XDG_CACHE_HOME/face4d/<kind>``, with ``~/.cache`` when ``XDG_CACHE_HOME`` is unset or empty."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "face4d" / kind


def content_key(tag: str, *arrays: np.ndarray, **params: object) -> str:
    """sha256 hex digest of a format tag, the arrays (dtype, shape and bytes) and the parameters."""
    h = hashlib.sha256(tag.encode())
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"|{a.dtype.str}{a.shape}|".encode())
        h.update(a.tobytes())
    for name in sorted(params):
        h.update(f"|{name}={params[name]!r}".encode())
    return h.hexdigest()


def load_or_compute(path: Path, load: Callable[[Path], T], compute: Callable[[], T],
                    save: Callable[[T, Path], None]) -> T:
    """Return ``load(path)`` if it succeeds; otherwise ``compute()``, saved to ``path`` atomically."""
    if path.is_file():
        try:
            return load(path)
        except _UNREADABLE as exc:
            warnings.warn(f"{path}: unreadable cache entry ({type(exc).__name__}: {exc}); recomputing", stacklevel=3)
    value = compute()
    try:
        with atomic_file(path, overwrite=True) as tmp:
            save(value, tmp)
    except OSError as exc:
        warnings.warn(f"{path}: cannot write cache entry ({exc}); continuing without it", stacklevel=3)
    return value
