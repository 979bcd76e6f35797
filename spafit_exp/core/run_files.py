"""The files a run keeps beside its record (`.lock`, `run.log`), opened so that nothing planted in a run directory
on a shared filesystem can redirect a write: no symbolic link is followed (O_NOFOLLOW) and only a plain file with
a single name is written to, so a `.lock` or `run.log` linked to a file elsewhere is refused in one line instead of
truncating or appending to that file. Also the lock that gives each run directory one owner, and WriteFailed:
the one error a failed write (a full disk, a quota) raises, naming the file."""

from __future__ import annotations

import errno
import os
import platform
import re
import stat
import sys
import time
from pathlib import Path

from spafit_exp.core.errors import ConfigError

LOCK = ".lock"
# A status probe (lock_is_held) holds a run's lock for microseconds; a job that finds it busy retries this often,
# this far apart, before it concludes that another process owns the directory.
LOCK_TRIES, LOCK_RETRY_S = 5, 0.05
_NO_FOLLOW = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # O_NONBLOCK: a planted FIFO must not hang the open


def exit_status(command) -> int:
    """A command-line tool's body (a callable returning its exit status) run the project's way: bad input is one
    `error:` line and status 2, a file that could not be written one line and status 1."""
    try:
        return command()
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except WriteFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


class WriteFailed(OSError):
    """A run's file could not be written (no space left, a quota, a folder gone read-only)."""

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror}"


def write_failed(path: Path, err: Exception) -> WriteFailed | None:
    """`err`, raised while writing `path`, as a WriteFailed naming `path`; None if it is no file-system error. A
    writer's own exception can be one: safetensors' SafetensorError quotes Rust's `(os error 28)`, torch.save's
    RuntimeError says nothing, but a full disk shows as no block left (a half-written temp file took the last)."""
    if isinstance(err, WriteFailed):
        return err
    if isinstance(err, OSError):
        return WriteFailed(err.errno, err.strerror or str(err), str(path))
    quoted = re.search(r"\(os error (\d+)\)", str(err))
    try:
        code = int(quoted.group(1)) if quoted else errno.ENOSPC if os.statvfs(Path(path).parent).f_bavail == 0 else 0
    except OSError:
        return None
    return WriteFailed(code, os.strerror(code), str(path)) if code else None


def open_plain(path: Path, flags: int, mode: int = 0o666) -> int:
    """os.open of one of the run directory's own files (created 0o666 less the user's umask, like every file a run
    writes); ConfigError naming it when it is a symbolic link, a hard link (another name of some other file), not a
    plain file, or cannot be opened."""
    try:
        fd = os.open(path, flags | _NO_FOLLOW, mode)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise ConfigError(f"{path}: is a symbolic link; a run never writes through one (remove it)") from None
        raise ConfigError(f"{path}: cannot open it for writing ({err.strerror})") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        what = "a hard link to another file" if stat.S_ISREG(info.st_mode) else "not a plain file"
        raise ConfigError(f"{path}: is {what}; a run writes only files of its own (remove it)")
    return fd


def read_plain(path: Path) -> bytes | None:
    """The bytes of a file read back from a run directory (a record), None if there is none. Only a plain file is
    read: OSError naming what `path` is otherwise, since a FIFO would block the reader for ever and a symbolic link
    would read some other file in place of the run's own."""
    try:
        fd = os.open(path, os.O_RDONLY | _NO_FOLLOW)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "a symbolic link, not the run's own file") from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a plain file (a FIFO, a device or a folder?)")
        with os.fdopen(os.dup(fd), "rb") as handle:
            return handle.read()
    finally:
        os.close(fd)


def acquire_lock(directory: Path):
    """Exclusive, non-blocking `flock` on `<run dir>/.lock`. The kernel drops it when the owner exits, even on
    SIGKILL, so a lock is never stale. Returns the open handle (keep it), or None if another process holds it."""
    import fcntl

    path = Path(directory) / LOCK
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"{path.parent}: cannot create the run directory ({err.strerror})") from None
    handle = os.fdopen(open_plain(path, os.O_RDWR | os.O_CREAT), "r+b", buffering=0)
    for attempt in range(LOCK_TRIES):
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if attempt == LOCK_TRIES - 1:
                handle.close()
                return None
            time.sleep(LOCK_RETRY_S)
    # The owner line goes over the start of the file, never truncating it (readers take the first line); it is
    # informative only, so a full disk does not stop the run here.
    try:
        os.pwrite(handle.fileno(), f"{platform.node()} {os.getpid()}\n".encode(), 0)
    except OSError:
        pass
    return handle


def lock_is_held(directory: Path) -> bool:
    """Whether a live process owns the run directory, from its `.lock` alone: a shared non-blocking `flock` on a
    read-only handle fails only while an owner holds it (the kernel, or NFS's lock manager, drops a dead owner's
    lock), so no process table is read and it works for runs on other nodes. Never creates the file."""
    import fcntl

    try:
        fd = os.open(Path(directory) / LOCK, os.O_RDONLY | _NO_FOLLOW)
    except OSError:  # no lock file (nobody ever ran here, or the directory is gone), or a link no run would take
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def lock_owner(directory: Path) -> str:
    """`<host> <pid>` as the last owner wrote it into `.lock` (shown by `sweep status`; informative only)."""
    try:
        fd = os.open(Path(directory) / LOCK, os.O_RDONLY | _NO_FOLLOW)
    except OSError:
        return ""
    try:
        return os.read(fd, 512).decode(errors="replace").split("\n", 1)[0].strip()
    except OSError:
        return ""
    finally:
        os.close(fd)


def release_lock(handle) -> None:
    """Unlock without deleting the file: unlinking a lock file races with processes that already opened it."""
    import fcntl

    if handle is not None:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def set_aside(path: Path, why: str = "corrupt") -> Path:
    """Move `path` to <stem>.<why>-<UTC time><suffix> beside it (kept, never deleted); returns the new path."""
    path = Path(path)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target, n = path.with_name(f"{path.stem}.{why}-{stamp}{path.suffix}"), 1
    while target.exists():
        target, n = path.with_name(f"{path.stem}.{why}-{stamp}-{n}{path.suffix}"), n + 1
    os.replace(path, target)
    return target
