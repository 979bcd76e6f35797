"""Files a run reads back that an earlier run wrote: resume checkpoints, selection statistics, pre-tuned decoders.

They are data, never code: tensors load with `torch.load(weights_only=True)`, so a pickle planted in a run or cache
folder runs nothing. And they may be damaged (a full disk, a job killed mid-copy, an edit): a file that cannot be
read is named in one warning and kept aside (a checkpoint) or dropped (a cache, made again), and its work is
redone, so one damaged file never fails every rerun. The temp files of writes a killed process left behind
(results.replace_atomically's `.<name>.<pid>.<random>.tmp`, as large as the file) are removed by the next reader."""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path
from typing import Callable

import torch

TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$")  # results.replace_atomically's temp names
# A cache folder may be shared by jobs on several hosts (a home directory on NFS), and the temp name holds no host:
# a writer elsewhere whose pid is free here is told from a dead one by its file, which a live write keeps touching.
STALE_S = 600


def load_tensors(path: Path):
    """torch.load of tensors and plain containers only (no pickled code), on the CPU."""
    return torch.load(path, map_location="cpu", weights_only=True)


def reason(err: BaseException) -> str:
    """An exception as one short line (torch's unpickling errors run over many)."""
    return " ".join(f"{type(err).__name__}: {err}".split())[:200]


def read_cache(path: Path, load: Callable = load_tensors, valid: Callable[[object], bool] = lambda _: True,
               what: str = "cache"):
    """The cached value at `path`, None when there is none, or None after one warning when it cannot be read or
    `valid` rejects it: the file is dropped and the caller computes it again. Orphaned temps in its folder go."""
    path = Path(path)
    drop_temps(path.parent)
    if not path.is_file():
        return None
    try:
        value = load(path)
        if not valid(value):
            raise ValueError("not what this cache holds")
        return value
    except Exception as err:  # any failure to read a derived file means: make it again
        print(f"warning: {what} {path} is damaged ({reason(err)}); dropped, computing it again", file=sys.stderr)
        path.unlink(missing_ok=True)
        return None


def drop_temps(folder: Path, name: str | None = None, exclusive: bool = False) -> list[Path]:
    """Remove the temp files killed writers left in `folder` (of file `name` only, if given). `exclusive`: the
    caller owns the folder (a run directory, its lock held), so no other process writes there and every temp but
    this process's own is orphaned; else only those of no live process on this host, untouched for STALE_S."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for path in entries:
        match = TEMP.match(path.name)
        if not match or (name is not None and match["name"] != name) or int(match["pid"]) == os.getpid():
            continue
        try:
            if not exclusive and (pid_alive(int(match["pid"])) or time.time() - path.lstat().st_mtime < STALE_S):
                continue
            path.unlink()
            removed.append(path)
        except OSError:
            pass  # gone already (another reader), or not ours to remove
    return removed


def pid_alive(pid: int) -> bool:
    """Whether a process of this pid lives on this host (another user's counts as alive)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # OverflowError: a number no pid can be
        return False
    except PermissionError:  # another user's process
        return True
    return True
