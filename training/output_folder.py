"""The training output folder: one run at a time, and a final save that replaces a model as one piece.

- `OutputFolderLock`: a lock file in ``--output_dir`` holding the owner's pid and host. A second run into a busy
  folder fails at once, naming the lock; a lock left by a run that died is taken over with a warning. The lock
  is an advisory `flock` on the file, which the kernel drops when its owner dies, so "stale" needs no guess
  about pids being reused.
- `staged_model_folder` / `publish_model_folder`: the final model (weights, config, processor, results, card)
  is written into a staging folder beside the output folder and swapped in with one atomic rename
  (`renameat2(RENAME_EXCHANGE)`), so a reader sees the old model or the new one, complete, never a mix. The
  output folder's subfolders (checkpoints, logs) are carried over as hard links; the old model's files go.
- `set_aside_previous_checkpoints`: with ``--overwrite``, the old run's checkpoints are moved out of the way
  of the new run's (same names, rotation, `get_last_checkpoint`) and deleted only once the new model is in.
"""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
import shutil
import socket
import stat
import time
from collections import Counter
from contextlib import contextmanager

logger = logging.getLogger(__name__)

LOCK_NAME = ".m2dino-train.lock"
PREVIOUS_CHECKPOINTS = ".previous-run-checkpoints"
_STAGING_PREFIX = ".saving-"


class OutputFolderBusyError(RuntimeError):
    pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class OutputFolderLock:
    """Exclusive use of an output folder by one run (`with OutputFolderLock(folder): ...`)."""

    def __init__(self, folder: str):
        self.folder = folder
        self.path = os.path.join(folder, LOCK_NAME)
        self._handle = None

    def acquire(self) -> "OutputFolderLock":
        import fcntl

        os.makedirs(self.folder, exist_ok=True)
        while True:
            handle = open(self.path, "a+", encoding="utf-8")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = self._owner(handle)
                handle.close()
                who = f"pid {owner.get('pid')} on host {owner.get('host')}" if owner else "another process"
                raise OutputFolderBusyError(
                    f"{self.folder} is in use by another training run ({who}; lock file {self.path}): wait for it to "
                    f"finish or choose another --output_dir"
                ) from None
            # The owner may have removed the file between our open and our lock: then we locked an orphan.
            try:
                same = os.path.samestat(os.fstat(handle.fileno()), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            handle.close()
        previous = self._owner(handle)
        if previous:
            alive = previous.get("host") == socket.gethostname() and _pid_alive(int(previous.get("pid", -1)))
            logger.warning(
                "taking over the stale lock %s of pid %s on host %s (started %s): that run ended without releasing "
                "it%s", self.path, previous.get("pid"), previous.get("host"), previous.get("started"),
                "" if not alive else " (a process with that pid runs, but it does not hold the lock)",
            )  # fmt: skip
        handle.seek(0)
        handle.truncate()
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        self._handle = handle
        return self

    @staticmethod
    def _owner(handle) -> dict | None:
        handle.seek(0)
        try:
            return json.loads(handle.read() or "null")
        except ValueError:
            return {"pid": "?", "host": "?"}

    def release(self):
        if self._handle is None:
            return
        try:
            os.remove(self.path)  # before unlocking: a waiting opener then sees the orphan and retries
        except FileNotFoundError:
            pass
        self._handle.close()
        self._handle = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


# ------------------------------------------------------------------------------------------------------
# Permissions


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_mode_for(folder: str) -> int:
    """The mode a new file in `folder` should get: the most common one of its files (a shared, group-writable
    folder stays so), else what `open` gives under the umask. (transformers writes weights through a private
    temporary file, mode 0600, which would otherwise differ from every other file of the folder.)"""
    modes = Counter()
    if os.path.isdir(folder):
        for entry in os.scandir(folder):
            if entry.is_file(follow_symlinks=False) and entry.name != LOCK_NAME:
                modes[stat.S_IMODE(entry.stat(follow_symlinks=False).st_mode)] += 1
    return modes.most_common(1)[0][0] if modes else 0o666 & ~_umask()


def match_permissions(folder: str, file_mode: int, folder_mode: int):
    """Give every file under `folder` `file_mode` and every folder `folder_mode`."""
    os.chmod(folder, folder_mode)
    for parent, folders, files in os.walk(folder):
        for name in folders:
            os.chmod(os.path.join(parent, name), folder_mode)
        for name in files:
            path = os.path.join(parent, name)
            if not os.path.islink(path):
                os.chmod(path, file_mode)


# ------------------------------------------------------------------------------------------------------
# The atomic final save


def _staging_root(target: str) -> str:
    parent, name = os.path.split(os.path.abspath(target))
    return os.path.join(parent, f".{name}{_STAGING_PREFIX}{os.getpid()}")


def remove_abandoned_staging(target: str):
    """Staging folders of saves into `target` that were killed before they finished (the caller holds the lock)."""
    parent, name = os.path.split(os.path.abspath(target))
    if not os.path.isdir(parent):
        return
    for entry in os.listdir(parent):
        if entry.startswith(f".{name}{_STAGING_PREFIX}"):
            shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)


@contextmanager
def staged_model_folder(target: str):
    """A new, empty folder named like `target` (the model card reads its folder's name) to save into; it is
    removed if the block fails, and `publish_model_folder` swaps it in."""
    root = _staging_root(target)
    shutil.rmtree(root, ignore_errors=True)
    staging = os.path.join(root, os.path.basename(os.path.abspath(target)))
    os.makedirs(staging)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


def _link_tree(source: str, destination: str):
    """`destination` as a copy of `source` made of hard links (no data copied; same files)."""
    os.mkdir(destination)
    shutil.copystat(source, destination)
    for entry in os.scandir(source):
        target = os.path.join(destination, entry.name)
        if entry.is_symlink():
            os.symlink(os.readlink(entry.path), target)
        elif entry.is_dir():
            _link_tree(entry.path, target)
        else:
            _link_or_copy(entry.path, target)


def _link_or_copy(source: str, destination: str):
    try:
        os.link(source, destination)
    except OSError:  # a file system without hard links: a copy costs disk and time, nothing else
        shutil.copy2(source, destination)


def _exchange(first: str, second: str):
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); OSError where the system cannot."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available")
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def carried_entries(target: str) -> list[str]:
    """What of the current output folder the new one keeps: its subfolders (checkpoints, logs) and the lock.
    Its top-level files are the old model's; the old run's set-aside checkpoints go too."""
    if not os.path.isdir(target):
        return []
    return sorted(entry.name for entry in os.scandir(target)
                  if entry.name == LOCK_NAME or (entry.is_dir(follow_symlinks=False) and entry.name != PREVIOUS_CHECKPOINTS))


def carry_over(staging: str, target: str):
    """Hard-link what the new folder keeps of `target` into `staging` (call before `publish_model_folder`)."""
    for name in carried_entries(target):
        if os.path.lexists(os.path.join(staging, name)):
            continue
        source = os.path.join(target, name)
        if os.path.isdir(source) and not os.path.islink(source):
            _link_tree(source, os.path.join(staging, name))
        else:
            _link_or_copy(source, os.path.join(staging, name))


def publish_model_folder(staging: str, target: str, file_mode: int | None = None):
    """Put the complete folder `staging` in place of `target`, in one atomic step where the system allows.

    Files get `file_mode` (default: that of `target`'s files) and the folder keeps `target`'s mode. Where
    `renameat2` or hard links are unavailable the swap takes two renames (a reader may then find no folder
    for a moment, never a mixed one) and a warning says so.
    """
    target = os.path.abspath(target)
    root = os.path.dirname(staging)
    exists = os.path.isdir(target)
    folder_mode = stat.S_IMODE(os.stat(target).st_mode) if exists else 0o777 & ~_umask()
    file_mode = file_mode_for(target) if file_mode is None else file_mode
    carried = set(carried_entries(target))
    for entry in os.scandir(staging):
        if entry.name not in carried:  # the carried links are the live files themselves: leave their modes
            if entry.is_dir(follow_symlinks=False):
                match_permissions(entry.path, file_mode, folder_mode)
            elif not entry.is_symlink():
                os.chmod(entry.path, file_mode)
    os.chmod(staging, folder_mode)
    if not exists:
        os.rename(staging, target)
    else:
        try:
            _exchange(staging, target)
        except OSError as error:
            logger.warning("cannot swap %s in one step (%s): replacing it with two renames", target, error)
            aside = os.path.join(root, "previous")
            os.rename(target, aside)
            os.rename(staging, target)
    shutil.rmtree(root, ignore_errors=True)  # now the old model (or nothing)


def set_aside_previous_checkpoints(folder: str) -> list[str]:
    """Move `folder`'s checkpoints into its `PREVIOUS_CHECKPOINTS` subfolder (deleted with the next final
    save); returns their names."""
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR  # imported here: taking a lock stays light

    names = [n for n in os.listdir(folder) if n.startswith(f"{PREFIX_CHECKPOINT_DIR}-") and os.path.isdir(os.path.join(folder, n))]
    if not names:
        return []
    aside = os.path.join(folder, PREVIOUS_CHECKPOINTS)
    os.makedirs(aside, exist_ok=True)
    for name in names:
        destination, suffix = os.path.join(aside, name), 1
        while os.path.exists(destination):  # a run killed after an earlier --overwrite left one of that name
            destination, suffix = os.path.join(aside, f"{name}.{suffix}"), suffix + 1
        os.rename(os.path.join(folder, name), destination)
    return sorted(names)
