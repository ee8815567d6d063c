"""
File helpers shared by maps and caches: checksums and all-or-nothing writes.

A reader never sees a half-written file or directory: everything is written beside
its target and renamed into place in one step.  A writer killed with ``kill -9``
can leave only its own temporary entries behind; each directory writer holds an
``flock`` on a lock file for its whole life, so the next writer of the same target
can tell a dead writer's debris (lock free) from a live writer's work (lock held)
and removes only the former.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

PARTIAL = ".partial-"  # temporary entries are named .<target name>.partial-<random>[.lock|.old]
_LOCK_SUFFIX = ".lock"
_OLD_SUFFIX = ".old"

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """
    Yield a temporary path beside ``path``; on success it replaces ``path`` in one step.

    Readers never see a half-written file, and a crash leaves only a stray temp file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
        _fsync_path(path.parent)  # the rename itself survives a power cut
    finally:
        tmp_path.unlink(missing_ok=True)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2). False where the kernel or libc lacks it."""
    fn = getattr(_libc, "renameat2", None)
    if fn is None:
        return False
    return fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0


def _fsync_tree(root: Path) -> None:
    for path in [*root.rglob("*"), root]:
        _fsync_path(path)


def _locked_file(path: Path, blocking: bool) -> int | None:
    """
    Open an fd holding an exclusive flock on ``path``.

    None when another process holds it or the file was removed (or replaced) while we waited
    for the lock.
    """
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
        # The lock only guards the entries if this is still the file at ``path``.
        if os.fstat(fd).st_ino == os.stat(path).st_ino:
            return fd
    except (BlockingIOError, FileNotFoundError):
        pass
    os.close(fd)
    return None


def _lock_new_writer(parent: Path, prefix: str) -> tuple[Path, int]:
    """Create and flock a fresh ``<prefix><random>.lock``; held until the writer ends (or dies)."""
    while True:
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=_LOCK_SUFFIX, dir=parent)
        os.close(fd)
        lock = Path(name)
        if (held := _locked_file(lock, blocking=True)) is not None:
            return lock, held
        # a debris cleaner took this lock file in the instant before we locked it: try another name


def _entries_of(lock: Path) -> tuple[Path, Path]:
    """
    Return the writer's new directory and where it parks the previous target.

    The previous target is parked there during a non-atomic swap.
    """
    stem = lock.with_name(lock.name[: -len(_LOCK_SUFFIX)])
    return stem, stem.with_name(stem.name + _OLD_SUFFIX)


def _lock_of(entry: Path) -> Path:
    name = entry.name[: -len(_OLD_SUFFIX)] if entry.name.endswith(_OLD_SUFFIX) else entry.name
    return entry.with_name(name + _LOCK_SUFFIX)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _size(path: Path) -> int:
    if path.is_file() or path.is_symlink():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file())


def remove_debris(target: str | Path) -> int:
    """
    Remove what killed writers of ``target`` left beside it; returns the bytes freed.

    Never touches a live writer's entries: a lock file is only cleaned while we hold
    its flock (the kernel drops a dead writer's lock), and a writer creates its lock
    before its directory and removes it after, so a directory without a lock file is dead.
    """
    target = Path(target).absolute()
    prefix = f".{target.name}{PARTIAL}"
    if not target.parent.is_dir():
        return 0
    freed = 0
    for entry in sorted(target.parent.iterdir()):
        if not entry.name.startswith(prefix):
            continue
        if entry.name.endswith(_LOCK_SUFFIX):
            fd = _locked_file(entry, blocking=False)
            if fd is None:
                continue  # held by a live writer (or already cleaned)
            try:
                new, old = _entries_of(entry)
                if old.exists() and not target.exists():
                    os.rename(old, target)  # killed between the two renames of a non-atomic swap
                for owned in (new, old):
                    if owned.exists():
                        freed += _size(owned)
                        _remove(owned)
                entry.unlink(missing_ok=True)
            finally:
                os.close(fd)
        elif entry.exists() and not _lock_of(entry).exists():
            freed += _size(entry)
            _remove(entry)
    return freed


@contextlib.contextmanager
def atomic_directory(target: str | Path) -> Iterator[Path]:
    """
    Yield a fresh temporary directory beside ``target``; on success it replaces ``target``.

    On any exception (including KeyboardInterrupt) the temporary directory is removed
    and an existing ``target`` is left untouched.  Debris of killed writers of the same
    target is removed first, so a crashed build holds its disk only until the next one.
    """
    target = Path(target).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_debris(target)
    lock, lock_fd = _lock_new_writer(target.parent, f".{target.name}{PARTIAL}")
    tmp, old = _entries_of(lock)
    try:
        tmp.mkdir(mode=0o755)
        yield tmp
        _fsync_tree(tmp)
        if target.exists() and _exchange(tmp, target):
            shutil.rmtree(tmp)  # tmp now holds the previous map
        elif target.exists():
            os.rename(target, old)
            os.rename(tmp, target)
            shutil.rmtree(old)
        else:
            os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not target.exists():
            os.rename(old, target)  # failed between the two renames: put the previous map back
        raise
    finally:
        lock.unlink(missing_ok=True)
        os.close(lock_fd)


def out_of_space(error: BaseException, directory: Path, needed: int) -> str | None:
    """
    Why a write failed when the disk is full, else None.

    Its errno says so, or (numpy and faiss report a short write without an errno) ``directory`` has
    less than ``needed`` bytes free.
    """
    free = shutil.disk_usage(directory).free
    full_errno = isinstance(error, OSError) and error.errno in (
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EFBIG,
    )
    if full_errno or "No space left on device" in str(error) or free < needed:
        return f"the disk is full (about {needed / 1e6:.1f} MB needed, {free / 1e6:.1f} MB free)"
    return None
