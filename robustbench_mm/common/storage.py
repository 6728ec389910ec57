"""Crash-safe file writes and a per-folder lock.

Every result the suite writes goes through `atomic_write_*`: the bytes land in a temporary
file in the same folder, are fsync'ed, and only then renamed over the target, so a kill at any
moment leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from robustbench_mm.errors import MMRobustError, UsageError


TEMP_PREFIX = ".mm-robust-"  # every temporary file we create starts so; the lock's clean-up removes only these


def ensure_writable_dir(path: Path, option: str = "--out") -> Path:
    """Create `path` if needed and prove it is writable, or raise a UsageError naming `option`."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=TEMP_PREFIX + "write-test-", suffix=".tmp"):
            pass
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFull(path) from None
        raise UsageError(f"output folder {str(path)!r} is not writable ({exc.strerror}); choose another with {option}") from None
    return path


def check_writable_dir(path: Path, option: str) -> None:
    """Refuse `path` unless it is, or could be made, a writable folder; creates nothing. A command that writes
    several folders checks them all this way before any work, so a bad one is found before hours of training."""
    path = Path(path)
    existing = next((p for p in (path, *path.parents) if p.exists() or p.is_symlink()), Path("."))
    if not existing.is_dir():
        raise UsageError(f"output folder {str(path)!r} is not writable ({str(existing)!r} is not a folder); "
                         f"choose another with {option}")
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=TEMP_PREFIX + "write-test-", suffix=".tmp"):
            pass
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFull(existing) from None
        raise UsageError(f"output folder {str(path)!r} is not writable ({exc.strerror} in {str(existing)!r}); "
                         f"choose another with {option}") from None


class DiskFull(MMRobustError):
    """No space left where a file was being written; what was saved before stays."""

    def __init__(self, folder: Path):
        super().__init__(f"no space left on the device holding {str(folder)!r}; free some space and rerun the same "
                         "command (everything saved before is kept)")


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC/EDQUOT, also when a library (safetensors) reports it as its own error type."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return "No space left on device" in text or "Disk quota exceeded" in text


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp_path)` then atomically rename tmp_path to `path`."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{str(path)!r} is a folder where mm-robust writes a file; move it away")
    try:
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f"{TEMP_PREFIX}{path.name}.", suffix=".tmp")
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFull(path.parent) from None
        raise
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if is_disk_full(exc):
            raise DiskFull(path.parent) from None
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")


def copy_file(source: Path, target: Path) -> None:
    atomic_write(target, lambda tmp: shutil.copyfile(source, tmp))


def read_json(path: Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"missing file {str(path)!r}") from None
    except IsADirectoryError:
        raise UsageError(f"{str(path)!r} is a folder where a JSON file should be") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"corrupted JSON in {str(path)!r}: {exc}") from None
    except RecursionError:
        raise UsageError(f"corrupted JSON in {str(path)!r}: nested too deeply") from None


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on `folder` so two processes never write the same run.

    The lock is advisory (flock) and vanishes with the process, so a killed run never leaves
    a stale lock behind; the temporary files such a run was writing are removed on the next lock.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / ".lock", "a+")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(
                f"{str(folder)!r} is in use by another mm-robust process; wait for it to finish or write elsewhere"
            ) from None
        # Holding the lock proves no live writer is here: a temporary file of ours left is from a killed one.
        # Only our own prefix is matched: a user's hidden .tmp file is none of our business.
        for stale in folder.glob(f"{TEMP_PREFIX}*.tmp"):
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
        yield
    finally:
        handle.close()


def folder_locked(folder: Path) -> bool:
    """Whether another process holds `folder`'s `folder_lock` now (a run still training); creates nothing. The
    shared lock taken to ask is dropped at once."""
    try:
        handle = open(Path(folder) / ".lock", "rb")
    except OSError:
        return False  # never locked, or unreadable: nothing says a writer is there
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return False
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    return False


class NotARegularFile(OSError):
    """A path to digest or load that is a folder, a FIFO, a socket or a device: it holds no weights."""


def irregular_kind(path: str | Path) -> str | None:
    """What `path` is when it exists (links followed) but is not a regular file: 'a folder', 'a FIFO', 'a socket',
    'a device'; None for a regular file or nothing there. Never opens it (a FIFO would block, /dev/zero never end)."""
    try:
        mode = Path(path).stat().st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode):
        return None
    return ("a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a socket"
            if stat.S_ISSOCK(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a file")


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a regular file, streamed: how a result names the exact weights it measured.

    Anything else is refused before it is opened (a link to /dev/zero would be hashed forever); the
    error says what the path is, not that it is missing."""
    path = Path(path)
    path.stat()  # a missing file stays a FileNotFoundError
    kind = irregular_kind(path)
    if kind is not None:
        raise NotARegularFile(errno.EINVAL, f"not a regular file ({kind})", str(path))
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
