"""Write outputs under a temporary name and rename them into place, so a crash never leaves half a file.

Every writer in the package goes through these two context managers: they refuse to replace an
existing output unless asked, and remove the temporary on any error. The guarantees, and the tests
that kill a writer at each step below, are in docs/reliability.md:

* **Replacing** (``overwrite``) swaps the new output in with one atomic exchange of the two names
  (Linux ``renameat2(RENAME_EXCHANGE)``), then deletes the old one, now under the temporary name.
  Where the exchange is missing, the old output is first renamed aside (``.NAME.PID.XXXXXXXX.old``),
  the new one renamed in, and the old one deleted; an interruption in between puts it back, and a
  process killed there leaves it whole under the aside name, which the next writer restores.
* **Not replacing**: the final rename itself refuses a target that appeared while the output was
  being written (another process's), so two writers never silently drop one result.
* **Temporaries** are named ``.NAME.PID.XXXXXXXX.tmp``; a writer first removes those of NAME whose
  process is gone (a run killed by SIGKILL), and leaves those of live processes alone.
"""
from __future__ import annotations

import ctypes
import errno
import os
import re
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

PAUSE_ENV = "FACE4D_PAUSE_AT"
"""Test hook, ``STEP:MARKER`` (or ``STEP#N:MARKER`` for the N-th time): on reaching ``pause_point(STEP)``
the process creates the file MARKER and waits until it is deleted, so that a test can kill it at that
exact moment, or let it go on."""
LOCK_FILE = ".face4d.lock"
_RENAME_NOREPLACE, _RENAME_EXCHANGE, _AT_FDCWD = 1, 2, -100
_TEMP = r"(\d+)\.[A-Za-z0-9_]{8}\.(tmp|old)"
_WINDOWS_INVALID = set('<>:"/\\|?*')
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
_pauses: dict[str, int] = {}


class OutputLockedError(OSError):
    """Another live process is writing the same output directory."""


def pause_point(step: str) -> None:
    """Wait here if ``PAUSE_ENV`` names ``step`` (see there); does nothing otherwise."""
    spec = os.environ.get(PAUSE_ENV)
    if not spec:
        return
    name, _, marker = spec.partition(":")
    name, _, nth = name.partition("#")
    if name != step:
        return
    _pauses[step] = _pauses.get(step, 0) + 1
    if _pauses[step] != int(nth or 1):
        return
    Path(marker).write_text(str(os.getpid()))
    deadline = time.monotonic() + 120
    while Path(marker).exists() and time.monotonic() < deadline:
        time.sleep(0.02)


def check_name(name: str, what: str = "name") -> str:
    """``name`` if it is one plain file or folder name on every system: no path separator, not ``.``
    or ``..``, none of the characters Windows forbids, no control character, no trailing dot or space,
    not a reserved device name (``CON``, ``NUL``, ...). A name from user input must pass this before
    it is joined to an output directory, or it could write outside it."""
    bad = sorted(set(name) & _WINDOWS_INVALID) + [f"\\x{ord(c):02x}" for c in name if ord(c) < 32]
    if not name or name in (".", "..") or bad or name[-1] in ". " or name.split(".")[0].upper() in _WINDOWS_RESERVED:
        reason = f"has {' '.join(bad)}" if bad else "is not a plain file name"
        raise ValueError(f"invalid {what} {name!r}: {reason} (no path separators, '..', characters <>:\"/\\|?*, "
                         f"trailing dots or spaces, or device names such as CON)")
    return name


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (another user's) or cannot tell: keep its files
    return True


def clean_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporaries this module left beside ``path`` in processes that are gone (killed
    before they could clean up), and put back an old output that such a process had renamed aside
    when ``path`` itself is missing. Returns what was removed or restored."""
    path = Path(path)
    names = (re.compile(re.escape(f".{path.name}.") + _TEMP),  # atomic_dir's temporary and aside
             re.compile(re.escape(f".{path.stem}.") + _TEMP + re.escape(path.suffix)))  # atomic_file's
    done = []
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return done
    for entry in entries:
        match = names[0].fullmatch(entry.name)
        if match is None:  # a file's temporary; never an aside
            match = names[1].fullmatch(entry.name)
            match = match if match is not None and match.group(2) == "tmp" else None
        if match is None or _pid_alive(int(match.group(1))):
            continue
        try:
            if match.group(2) == "old" and not os.path.lexists(path):
                os.rename(entry, path)
            else:
                _remove(entry)
        except OSError:
            continue
        done.append(entry)
    return done


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


def _libc_rename(src: Path, dst: Path, flags: int) -> bool:
    """``renameat2(src, dst, flags)``; False where the system has no such call (the caller falls back)."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "renameat2"):
        return False
    if libc.renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(src), None, str(dst))


def _exists_error(path: Path) -> FileExistsError:
    return FileExistsError(f"{path} already exists (written by another process meanwhile?); nothing was replaced; "
                           f"pass overwrite=True (--overwrite) to replace it")


def _check_target(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True (--overwrite) to replace it")
    if not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)


def check_dir_target(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Refuse what ``atomic_dir`` would refuse, so that a caller can fail before the work that fills
    the directory: unless ``overwrite``, an existing file or a non-empty directory at ``path``. The
    stale temporaries of ``path`` are cleaned up first (``clean_stale_temporaries``)."""
    path = Path(path)
    clean_stale_temporaries(path)
    if path.exists() and not overwrite:
        if not path.is_dir():
            raise FileExistsError(f"{path} already exists and is not a directory; "
                                  f"pass overwrite=True (--overwrite) to replace it")
        if any(path.iterdir()):
            raise FileExistsError(f"{path} already exists and is not empty; "
                                  f"pass overwrite=True (--overwrite) to replace it")
    return path


def _new_file(tmp: Path, path: Path, overwrite: bool) -> None:
    """Rename the finished temporary file onto ``path``; unless ``overwrite``, only if ``path`` is still free."""
    if overwrite:
        os.replace(tmp, path)
    elif not _libc_rename(tmp, path, _RENAME_NOREPLACE):
        try:
            os.link(tmp, path)  # fails if path exists, atomically
        except FileExistsError:
            raise _exists_error(path) from None
        except OSError:  # no hard links on this file system: check, then rename
            if os.path.lexists(path):
                raise _exists_error(path) from None
            os.replace(tmp, path)


@contextmanager
def atomic_file(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed to ``path``.

    The temporary keeps ``path``'s suffix so that writers choosing a format by extension work.
    """
    path = Path(path)
    _check_target(path, overwrite)
    clean_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.{os.getpid()}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        tmp.chmod(0o666 & ~_umask())  # mkstemp makes it private; the output should not be
        pause_point("file-complete")
        _new_file(tmp, path, overwrite)
    finally:
        tmp.unlink(missing_ok=True)


def _swap_dir(tmp: Path, path: Path, overwrite: bool) -> None:
    """Put the finished directory ``tmp`` at ``path``. Without ``overwrite`` the rename itself refuses a
    non-empty ``path`` (an empty directory is taken over); with it, the old output is exchanged out and
    left at ``tmp`` for the caller to delete, so ``path`` always holds a complete output."""
    if not overwrite or not os.path.lexists(path):
        try:
            os.rename(tmp, path)
            return
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                raise
            if not overwrite:
                raise _exists_error(path) from None
    if _libc_rename(tmp, path, _RENAME_EXCHANGE):
        pause_point("dir-swapped")
        return
    aside = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.old"
    os.rename(path, aside)
    try:
        pause_point("dir-aside")
        os.rename(tmp, path)
    except BaseException:
        if not os.path.lexists(path):
            os.rename(aside, path)
        raise
    os.rename(aside, tmp)  # deleted with the temporary
    pause_point("dir-swapped")


@contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``path``; on success it replaces ``path``.

    An existing non-empty ``path`` is refused unless ``overwrite``; an empty one is taken over. A
    ``path`` filled by another process while this one worked is refused too (``FileExistsError``),
    and this one's output removed. The temporary is removed on any error and on KeyboardInterrupt.
    """
    path = check_dir_target(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        tmp.chmod(0o777 & ~_umask())
        pause_point("dir-complete")
        _swap_dir(tmp, path, overwrite)
    finally:
        if os.path.lexists(tmp):
            _remove(tmp)


@contextmanager
def locked_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Hold an exclusive lock on the directory ``path`` (created if needed) while the block runs: a
    second process asking for it gets ``OutputLockedError`` at once. The lock is an ``flock`` on
    ``path/.face4d.lock``, so it dies with its process, even under SIGKILL. Where ``flock`` is missing
    (Windows) no lock is taken. A directory this call created and left empty is removed."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path} exists and is not a directory")
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    lock = path / LOCK_FILE
    handle = _lock(lock, path)
    try:
        yield path
    finally:
        lock.unlink(missing_ok=True)
        handle.close()
        if created and path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def _lock(lock: Path, path: Path) -> IO:
    handle = open(lock, "a+")
    try:
        import fcntl
    except ImportError:
        return handle
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "?"
        handle.close()
        raise OutputLockedError(f"{path} is being written by another process (pid {owner}); wait for it to "
                                f"finish or choose another output directory") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle
