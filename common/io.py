"""Atomic writes, safe names and safe loads: nothing half-written is ever read, nothing is written outside the
folder it was meant for, nothing untrusted is unpickled or allocated from a size a header claims.

Files and folders written here get the permissions a plain ``open()`` / ``mkdir()`` would give them (the umask
decides), not the private 0600 / 0700 of their temp names, so a cache or a run folder can be shared with a group.
"""
from __future__ import annotations

import glob
import json
import math
import os
import shutil
import tempfile
import tokenize
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

# A name may carry suffixes and temp prefixes (".<name>.XXXXXXXX.tmp.npz") and still fit the usual 255-byte limit.
MAX_NAME_BYTES = 200


class UnsafeNameError(ValueError):
    """A name (dialog, participant, method, tokens folder...) that cannot safely become a file or folder name."""


def check_name(value: Any, what: str = "name") -> str:
    """``value`` if it is safe as one file or folder name, else :class:`UnsafeNameError` saying why.

    Refused: non-strings, ``""``, a leading ``.`` (``.``, ``..``, hidden and temp names), a path separator
    (``/``, ``\\``), NUL or any other non-printable character, more than :data:`MAX_NAME_BYTES` bytes in UTF-8.
    Every name that becomes a path goes through here (corpus ids, cache manifests, output names on the command line).
    """
    if not isinstance(value, str):
        raise UnsafeNameError(f"{what} {value!r} is not a string")
    why = None
    if not value:
        why = "it is empty"
    elif value.startswith("."):
        why = "it starts with '.'"
    elif any(c in value for c in "/\\\0"):
        why = "it holds a path separator or NUL"
    elif not value.isprintable():
        why = "it holds a control character"
    elif len(value.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        why = f"it is longer than {MAX_NAME_BYTES} bytes"
    if why:
        shown = value if len(value) <= 60 else value[:60] + f"... ({len(value)} characters)"
        raise UnsafeNameError(f"{what} {shown!r} is not usable as a file name: {why}")
    return value


def current_umask() -> int:
    """The process's umask, read without changing it where the OS allows (Linux), else set and restored."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _plain_permissions(path: Path, directory: bool) -> None:
    """Give a temp file / folder (created 0600 / 0700) the mode a plain open() / mkdir() would have given it."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


@contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success rename it over ``path`` (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        _plain_permissions(tmp, directory=False)
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def remove_stale_temps(path: str | Path) -> list[Path]:
    """Delete the temp files :func:`atomic_path` left beside ``path`` when its writer was killed.

    Only call this where no other process may be writing ``path`` at the same time.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    stale = [p for p in path.parent.glob(f".{glob.escape(path.name)}.*.tmp*") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path) -> Any:
    with open(path) as f:
        return json.load(f)


def save_npy(path: str | Path, array: np.ndarray) -> None:
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, array, allow_pickle=False)


def load_npy(path: str | Path, mmap: bool = False) -> np.ndarray:
    return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)


# What numpy / zipfile raise on a truncated, corrupt, foreign or hostile file (compression methods they do not
# know, encrypted members, bad deflate streams, lying sizes, .npy headers numpy's own parser chokes on).
READ_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, MemoryError, zlib.error,
               NotImplementedError, RuntimeError, tokenize.TokenError, SyntaxError, RecursionError)


def check_npy_header(f, available: int) -> None:
    """Refuse an .npy stream whose header claims more data than ``available`` bytes (or is unreadable, or holds
    Python objects) before numpy allocates the claimed array (a lying header would otherwise ask for petabytes)."""
    fmt = np.lib.format
    version = fmt.read_magic(f)
    if version == (1, 0):
        shape, _, dtype = fmt.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, _, dtype = fmt.read_array_header_2_0(f)
    else:                     # 3.0 is only written for non-latin-1 field names: never a plain numeric array
        raise ValueError(f".npy format version {version} is not supported here (1.0 or 2.0 expected)")
    if dtype.hasobject:
        raise ValueError(f"holds Python objects ({dtype}), which only a pickle can rebuild: refused")
    need = math.prod(shape) * dtype.itemsize
    if need > available - f.tell():
        raise ValueError(f"header claims an array of shape {shape} {dtype} ({need} bytes), but only "
                         f"{max(0, available - f.tell())} bytes follow (truncated or corrupt)")


def read_npy_checked(path: str | Path) -> np.ndarray:
    """An .npy file, its header checked first (:func:`check_npy_header`); raises one of :data:`READ_ERRORS`."""
    with open(path, "rb") as f:
        check_npy_header(f, os.fstat(f.fileno()).st_size)
    return np.load(path, allow_pickle=False)


# Deflate expands at most about 1032-fold: a member declaring more than this per stored byte lies about its size.
MAX_EXPANSION = 1100


def check_npz_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    """Refuse an npz member whose declared size could not come from the bytes stored (a zip header lies too), or
    whose .npy header claims more than that size (:func:`check_npy_header`)."""
    stored = info.compress_size if info.compress_type != zipfile.ZIP_STORED else info.file_size
    if info.file_size > stored * MAX_EXPANSION + 4096:
        raise ValueError(f"member {info.filename!r} declares {info.file_size} bytes from {info.compress_size} "
                         "stored bytes (a lying zip header)")
    with zf.open(info) as f:
        check_npy_header(f, info.file_size)


def read_npz_checked(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of an .npz file, each member checked (:func:`check_npz_member`) before it is read; raises one
    of :data:`READ_ERRORS` (a single .npy where an archive belongs is a ``ValueError``)."""
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if info.is_dir() or not info.filename.endswith(".npy"):
                raise ValueError(f"member {info.filename!r} is not an .npy array")
            check_npz_member(zf, info)
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temp directory beside ``path``; on success rename it to ``path`` (replacing nothing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        _plain_permissions(tmp, directory=True)
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
