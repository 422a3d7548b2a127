"""Result files: atomic writes (a temp file beside the target, renamed into place) and JSON-safe values.

Below every stage: measuring, hardware, memory, the join and the reports all write through it.
It imports nothing heavy (no torch, no pandas): the command line checks ``--out`` with it before
the commands are imported.

Folders (:func:`atomic_dir`) are built in a temporary sibling ``.<name>.tmp-XXXXXXXX`` holding a
marker file (:data:`MARKER`: the writing process's id and host) and renamed into place at the
end with :func:`rename_noreplace`, a rename that fails when the target appeared meanwhile, so a
folder someone else created while hwprof worked is never replaced. A temporary sibling whose
process is gone (killed by SIGKILL, a power cut) is removed by the next write into the same folder.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import glob
import json
import logging
import math
import os
import secrets
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["write_atomic", "write_json_atomic", "to_jsonable", "atomic_dir", "read_json_record", "rename_noreplace",
           "MARKER", "TEMP_SUFFIX_CHARS", "folder_entries", "remove_stale_siblings"]

log = logging.getLogger(__name__)
T = TypeVar("T")

MARKER = ".hwprof-partial"
"""The file in each temporary folder of :func:`atomic_dir` (JSON: pid, host): what tells a stale
folder of hwprof's own from anything else of the same name."""

TEMP_SUFFIX_CHARS = len(".tmp-") + 8
"""What a temporary sibling adds to a folder's name besides its leading dot (``.tmp-`` and the 8
characters of :func:`tempfile.mkdtemp`)."""


def read_json_record(path: Path, from_dict: Callable[[Any], T], what: str) -> T | None:
    """``from_dict`` of the JSON in ``path`` (a cache file); None when it does not exist, or when it
    cannot be read or parsed (logged: ``ignoring unreadable <what> <path> (<error>); measuring``)."""
    if not path.exists():
        return None
    try:
        return from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError, KeyError) as e:
        log.warning("ignoring unreadable %s %s (%s); measuring", what, path, e)
        return None


def to_jsonable(obj: Any) -> Any:
    """Recursively turn numpy/pandas/torch scalars and NaN into JSON-safe values (NaN -> None)."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    pd = sys.modules.get("pandas")   # a DataFrame means pandas is loaded; this module does not load it
    if pd is not None and isinstance(obj, pd.DataFrame):
        return to_jsonable(obj.reset_index().to_dict(orient="records"))
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def write_atomic(path: str | os.PathLike[str], data: str | bytes) -> Path:
    """Write ``data`` to a temp file beside ``path`` then rename it into place (no half-written files)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are meant to be shared
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> Path:
    """:func:`write_atomic` of ``obj`` as indented JSON (through :func:`to_jsonable`)."""
    return write_atomic(path, json.dumps(to_jsonable(obj), indent=1) + "\n")


# ----------------------------------------------------------------------------- rename without replacing
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1      # linux/fs.h
_RENAME_EXCL = 0x4         # macOS sys/stdio.h, renamex_np


@functools.cache
def _native_noreplace() -> Callable[[bytes, bytes], int] | None:
    """The C library's rename that refuses an existing target (Linux ``renameat2`` with
    ``RENAME_NOREPLACE``, glibc >= 2.28; macOS ``renamex_np`` with ``RENAME_EXCL``), as
    ``f(src, dst) -> 0 or -1`` (errno in ``ctypes.get_errno()``); None when there is none."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if sys.platform.startswith("linux"):
            fn = libc.renameat2
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            fn.restype = ctypes.c_int
            return lambda s, d: int(fn(_AT_FDCWD, s, _AT_FDCWD, d, _RENAME_NOREPLACE))
        if sys.platform == "darwin":
            fx = libc.renamex_np
            fx.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint]
            fx.restype = ctypes.c_int
            return lambda s, d: int(fx(s, d, _RENAME_EXCL))
    except (OSError, AttributeError):
        pass
    return None


def rename_noreplace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Rename ``src`` to ``dst``; ``FileExistsError`` when ``dst`` exists, even as an empty folder
    created a moment before. Atomic where the C library and the file system have such a rename
    (Linux ``renameat2(RENAME_NOREPLACE)``, macOS ``renamex_np(RENAME_EXCL)``); elsewhere a check
    then ``os.rename``, which still refuses a non-empty folder (only an empty folder created in the
    instant between the two could be replaced)."""
    native = _native_noreplace()
    if native is not None:
        if native(os.fsencode(src), os.fsencode(dst)) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):   # not: this file system lacks the flag
            raise OSError(err, os.strerror(err), os.fspath(src), None, os.fspath(dst))
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), os.fspath(dst))
    try:
        os.rename(src, dst)
    except OSError as e:
        if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), os.fspath(dst)) from e
        raise


# ----------------------------------------------------------------------------- folders
def folder_entries(folder: Path) -> tuple[set[str], set[str]]:
    """(files, folders) below ``folder``, as relative POSIX paths. Symbolic links are entries of
    their own (listed with the files) and never followed, so nothing outside ``folder`` is seen."""
    files: set[str] = set()
    dirs: set[str] = set()
    for root, dirnames, filenames in os.walk(folder, followlinks=False):
        rel = Path(root).relative_to(folder)
        for d in dirnames:
            (files if os.path.islink(os.path.join(root, d)) else dirs).add((rel / d).as_posix())
        files.update((rel / f).as_posix() for f in filenames)
    return files, dirs


def _write_marker(folder: Path) -> None:
    (folder / MARKER).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}) + "\n")


def _is_stale(folder: Path) -> bool:
    """``folder`` holds hwprof's marker, written on this host by a process that is gone."""
    try:
        mark = json.loads((folder / MARKER).read_text())
        pid, host = int(mark["pid"]), str(mark["host"])
    except (OSError, ValueError, TypeError, KeyError):
        return False
    if host != socket.gethostname() or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:        # alive (another user's process) or not ours to judge
        return False
    return False


def remove_stale_siblings(target: Path) -> list[Path]:
    """Remove the temporary siblings of ``target`` (``.<name>.tmp-*``, ``.<name>.old-*``) that an
    earlier, killed hwprof left: only folders with hwprof's marker whose process is gone (a live
    run's folder is left alone). Both are removed whole: a ``.tmp-`` folder is what hwprof was
    writing, an ``.old-`` one the earlier folder it had cleared for removal when it was killed (one
    kept on purpose, holding what was not hwprof's, has no marker)."""
    removed = []
    name = glob.escape(target.name)
    for kind in ("tmp", "old"):
        for p in target.parent.glob(f".{name}.{kind}-*"):
            if p.is_symlink() or not p.is_dir() or not _is_stale(p):
                continue
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
            log.info("removed %s, left by an earlier hwprof run that was killed", p)
    return removed


def _remove_listed(folder: Path, listed: Collection[str] | None) -> bool:
    """Remove ``listed`` (relative paths; None: everything) from ``folder``, then its marker, its
    empty sub-folders and itself when empty. True when nothing is left."""
    if listed is None:
        shutil.rmtree(folder, ignore_errors=True)
        return not folder.exists()
    files, _ = folder_entries(folder)
    for rel in files & set(listed):
        with contextlib.suppress(OSError):
            (folder / rel).unlink()
    with contextlib.suppress(OSError):
        (folder / MARKER).unlink()
    for root, _dirs, _files in sorted(os.walk(folder, followlinks=False), key=lambda t: -len(t[0])):
        with contextlib.suppress(OSError):
            os.rmdir(root)
    return not folder.exists()


def _aside(target: Path) -> Path:
    """Move ``target`` to a fresh sibling ``.<name>.old-XXXXXXXX`` (with hwprof's marker) and return it."""
    while True:
        old = target.with_name(f".{target.name}.old-{secrets.token_hex(4)}")
        try:
            rename_noreplace(target, old)
        except FileExistsError:
            if not os.path.lexists(old):
                raise
            continue
        _write_marker(old)
        return old


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str],
               removable: Callable[[Path], Collection[str] | None] | None = None) -> Iterator[Path]:
    """Build an output folder completely or not at all.

    Yields a fresh temporary sibling folder (``.<name>.tmp-XXXXXXXX``) to write into; on any
    exception, KeyboardInterrupt included, it is removed and ``path`` is left as it was. On a clean
    exit it is renamed to ``path`` (:func:`_publish`). A folder at ``path`` when the block began is
    replaced: moved aside, the new one renamed in, then removed, whole, or with ``removable`` only
    what ``removable(path)`` lists (relative paths; None there: not replaced, ``FileExistsError``);
    anything else found in it then is kept in the ``.old-`` sibling, with a warning. A folder that
    appears at ``path`` while the block runs is never replaced (``FileExistsError``). ``path`` that
    exists and is not a folder raises ``NotADirectoryError`` before anything is written."""
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(f"{target} exists and is not a folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_siblings(target)
    existed = target.is_dir()
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        _write_marker(tmp)
        yield tmp
        _publish(tmp, target, existed, removable)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.chmod(target, 0o777 & ~_umask())


def _publish(tmp: Path, target: Path, existed: bool,
             removable: Callable[[Path], Collection[str] | None] | None) -> None:
    """Rename the finished ``tmp`` to ``target`` (see :func:`atomic_dir`). The marker goes, unless
    ``target`` is itself a marked temporary folder (a result saved inside an ``--out`` folder being
    built), whose marker the new folder keeps."""
    if not (existed and (target / MARKER).is_file()):
        (tmp / MARKER).unlink(missing_ok=True)
    if not existed or not os.path.lexists(target):
        try:
            rename_noreplace(tmp, target)
        except FileExistsError:          # created meanwhile: not ours to replace
            raise FileExistsError(errno.EEXIST, "created by someone else while hwprof was writing; not replaced",
                                  os.fspath(target)) from None
        return
    listed = None
    if removable is not None:
        listed = removable(target)
        if listed is None:
            raise FileExistsError(errno.EEXIST, "changed by someone else while hwprof was writing (it holds what "
                                  "hwprof did not write); not replaced", os.fspath(target))
    old = _aside(target)
    try:
        rename_noreplace(tmp, target)
    except FileExistsError:                 # created in the instant between the two renames
        (old / MARKER).unlink(missing_ok=True)
        raise FileExistsError(errno.EEXIST, "created by someone else while hwprof was writing; not replaced "
                              f"(the earlier folder is in {old})", os.fspath(target)) from None
    except BaseException:
        with contextlib.suppress(OSError):
            rename_noreplace(old, target)
            (target / MARKER).unlink(missing_ok=True)
        raise
    if not _remove_listed(old, listed):
        log.warning("kept %s: it holds what appeared in %s while hwprof was writing (not hwprof's to remove)",
                    old, target)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
