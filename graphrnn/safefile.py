"""Files that someone else may have put in our way: the one atomic write, reading without
blocking on a FIFO or following a link, cache directories and entries that must be the user's
own, and the temporary files a killed write left behind.

Checkpoints (``graphrnn.checkpoint``) and the compiled-object caches (``codegen.llvm_jit``,
``codegen.cuda_cpu``) all write through ``atomic_write`` and read through ``open_regular``; the
caches also ask ``untrusted_dir`` / ``untrusted_entry`` before loading anything, because what
they load is machine code. Files the user asked for (pictures, exported code, plots) go through
the same ``atomic_write`` with ``mode=umask_mode()``, the permissions ``open()`` would give.
"""

from __future__ import annotations

import errno
import hashlib
import os
import socket
import stat
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

# a temporary file not touched for this long is a killed write's, whatever its name says; a live
# writer touches its file continuously, and a checkpoint is written in seconds
STALE_TMP_SECONDS = 600.0
TMP_PREFIX = ".tmp-"
TMP_SUFFIX = ".tmp"


class NotRegularFileError(OSError):
    """A path that must be a regular file is a FIFO, a device, a directory or a symlink."""


def _host_tag() -> str:
    # process ids only mean something on the host that wrote them (a shared NFS folder has
    # writers on several machines)
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _tmp_prefix(path: Path) -> str:
    return f"{TMP_PREFIX}{path.name}.{_host_tag()}-{os.getpid()}."


def umask_mode() -> int:
    """The permissions ``open()`` gives a new file: 0666 less the process's umask. For files
    the user asked for (pictures, exported code), which others may be meant to read."""
    try:  # Linux says it without changing it (changing it races with other threads)
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str | os.PathLike[str], data: bytes | Callable[[BinaryIO], None],
                 *, fsync: bool = True, mode: int | None = None) -> Path:
    """Write ``data`` (bytes, or a function writing to a binary file) to ``path`` atomically: a
    temporary file in the same folder (mode 0600, from ``mkstemp``, or ``mode`` when given:
    ``umask_mode()`` for a file the user reads), then ``os.replace``; a failed write leaves the
    old file and no temporary file. Temporary files of earlier writes of the same path whose
    process is gone, or that are older than ``STALE_TMP_SECONDS``, are removed first."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    clean_stale_tmp(path)
    fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path), suffix=TMP_SUFFIX, dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            if mode is not None:
                os.fchmod(f.fileno(), mode)
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True   # someone else's process: alive
    return True


def clean_stale_tmp(path: str | os.PathLike[str], max_age: float = STALE_TMP_SECONDS) -> list[Path]:
    """Remove the temporary files earlier writes of ``path`` left behind (killed saves) and say
    which. A file is stale when the process named in it is gone on this host, or when nobody
    has written it for ``max_age`` seconds; only our own regular files are touched, so a
    concurrent writer's file (alive, recently written) stays. Names from before the pid was
    part of them (``NAME.XXXXXXXX.tmp``) are judged by age alone."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    ours = f"{TMP_PREFIX}{path.name}."
    legacy = f"{path.name}."
    removed: list[Path] = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    now = time.time()
    for name in names:
        if not name.endswith(TMP_SUFFIX):
            continue
        if name.startswith(ours):
            tag, _, rest = name[len(ours):].partition("-")
            pid_text = rest.partition(".")[0]
            pid = int(pid_text) if pid_text.isdigit() else None
        elif name.startswith(legacy) and len(name) == len(legacy) + 8 + len(TMP_SUFFIX):
            tag, pid = "", None
        else:
            continue
        p = folder / name
        try:
            st = os.lstat(p)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
            continue
        gone = tag == _host_tag() and pid is not None and pid != os.getpid() \
            and not _pid_alive(pid)
        if gone or now - st.st_mtime > max_age:
            try:
                os.unlink(p)
                removed.append(p)
            except OSError:
                pass
    return removed


def open_regular(path: str | os.PathLike[str], *, follow_symlinks: bool = True) -> BinaryIO:
    """``open(path, "rb")`` that never blocks: a FIFO, device, socket or directory raises
    ``NotRegularFileError`` (checked on the opened descriptor, so the file cannot be swapped
    between the check and the read); ``follow_symlinks=False`` also refuses a symlink."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if not follow_symlinks:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if e.errno == errno.ELOOP and not follow_symlinks:
            raise NotRegularFileError(errno.ELOOP, "it is a symbolic link", str(path)) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFileError(errno.EINVAL, f"it is {file_kind(st.st_mode)}, not a "
                                      "regular file", str(path))
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def file_kind(mode: int) -> str:
    """'a FIFO', 'a directory', ... for a stat mode (for messages)."""
    for test, what in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return what
    return "not a regular file"


# ---- caches: only the user's own directories and files ----

def untrusted_dir(path: str | os.PathLike[str]) -> str | None:
    """Why a cache directory must not be read from or written to, or None when it is the
    user's own and nobody else may write in it (another user could otherwise plant or swap
    the machine code we load)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None   # we will create it ourselves (mode 0700)
    except OSError as e:
        return f"cannot stat it ({e.strerror})"
    if not stat.S_ISDIR(st.st_mode):
        return "it is not a directory"
    if st.st_uid != os.getuid():
        return f"it belongs to uid {st.st_uid}, not to us (uid {os.getuid()})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"it is group- or world-writable (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def untrusted_entry(st: os.stat_result) -> str | None:
    """Why an opened cache entry (its ``os.fstat``) must not be loaded, or None."""
    if not stat.S_ISREG(st.st_mode):
        return file_kind(st.st_mode)
    if st.st_uid != os.getuid():
        return f"it belongs to uid {st.st_uid}, not to us (uid {os.getuid()})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"it is group- or world-writable (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def make_private_dir(path: str | os.PathLike[str]) -> str | None:
    """Create a cache directory (mode 0700 for what we create) and say why it cannot be used,
    or None when it can."""
    try:
        Path(path).mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        return f"cannot create it ({e.strerror})"
    return untrusted_dir(path)


_warned: set[str] = set()


def warn_once(message: str) -> None:
    """A RuntimeWarning the first time a message is seen in this process (a refused cache
    directory would otherwise warn on every compile)."""
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def _refuse_dir(folder: Path, why: str) -> None:
    warn_once(f"graphrnn: not using the cache directory {folder}: {why}; compiling without the "
              "disk cache")


def read_cache_file(path: Path, max_bytes: int) -> bytes | None:
    """The bytes of a cache entry, or None (and one warning) when it must not be trusted: not
    a regular file, a symlink, not ours, writable by others, in a directory others may write,
    or larger than ``max_bytes``. A missing entry is None without a warning."""
    why = untrusted_dir(path.parent)
    if why is not None:
        _refuse_dir(path.parent, why)
        return None
    try:
        f = open_regular(path, follow_symlinks=False)
    except FileNotFoundError:
        return None
    except OSError as e:
        warn_once(f"graphrnn: ignoring the cache entry {path}: {e.strerror or e}")
        return None
    with f:
        st = os.fstat(f.fileno())
        why = untrusted_entry(st)
        if why is None and st.st_size > max_bytes:
            why = f"it is larger than {max_bytes} bytes"
        if why is not None:
            warn_once(f"graphrnn: ignoring the cache entry {path}: {why}")
            return None
        return f.read(max_bytes)


def write_cache_file(path: Path, data: bytes) -> bool:
    """Write a cache entry atomically into a private directory; False (after one warning) when
    the directory is not ours alone, or the write fails (a read-only home is not an error)."""
    why = make_private_dir(path.parent)
    if why is not None:
        _refuse_dir(path.parent, why)
        return False
    try:
        atomic_write(path, data, fsync=False)
    except OSError:
        return False
    return True


def keyed_digest(key: str, payload: bytes) -> bytes:
    """SHA-256 over the key and the payload, so an entry is bound to its key: another cell's
    entry copied under this key's name does not check out even with its key field replaced.
    There is no secret in it: what keeps other users from forging entries is that only our own
    files in our own private directory are read (``read_cache_file``)."""
    h = hashlib.sha256()
    h.update(key.encode())
    h.update(b"\0")
    h.update(payload)
    return h.digest()


def read_keyed(path: Path, magic: bytes, key: str, max_bytes: int) -> bytes | None:
    """The payload of an entry ``write_keyed`` wrote for ``key`` (header: magic, key, keyed
    digest), or None when it is missing, untrusted (``read_cache_file``), or not this key's."""
    data = read_cache_file(path, max_bytes)
    if data is None:
        return None
    k = key.encode()
    head = len(magic) + len(k) + 32
    if len(data) < head or not data.startswith(magic) or data[len(magic):head - 32] != k:
        return None
    payload = data[head:]
    return payload if keyed_digest(key, payload) == data[head - 32:head] else None


def write_keyed(path: Path, magic: bytes, key: str, payload: bytes) -> bool:
    """Write ``payload`` under ``key`` for ``read_keyed`` (see ``write_cache_file``)."""
    return write_cache_file(path, magic + key.encode() + keyed_digest(key, payload) + payload)
