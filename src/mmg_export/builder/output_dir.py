"""Where a build writes: a locked, temporary directory moved into place only over what was checked.

    lock .NAME.lock -> remove stale .NAME.tmp-* -> check --out -> build into .NAME.tmp-XXXXXXXX
      -> check --out again -> rename into place (atomically swapped with a checked old one) -> unlock

* ``--out`` must not exist, or (with ``--overwrite``) be one of our artifact directories: a real
  directory with a valid manifest that lists every file in it. Anything else (a folder of other
  files, a file, a link, the working directory) is refused before the build starts.
* A second build to the same ``--out`` is refused while the first holds the lock; whatever
  appears at ``--out`` during the build, or replaces the checked directory, is left alone and
  the build is discarded (Linux ``renameat2``: no window between the check and the rename).
* On any exception (KeyboardInterrupt, a SIGTERM turned into one, a full disk) the temporary
  directory is removed; SIGINT/SIGTERM wait while the directory is swapped or removed.
  Temporary directories that a killed build left behind are removed by the next build to the
  same ``--out`` (they are stale: the lock proves no build is writing them).
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import re
import secrets
import shutil
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

from mmg_runtime.errors import UserError
from mmg_runtime.manifest import load_manifest
from mmg_runtime.trust import unlisted_files

DISK_FULL_BYTES = 1 << 20
"""A build that fails with less free space than this on its filesystem failed for want of space."""
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2  # renameat2(2) flags
AT_FDCWD = -100


@contextlib.contextmanager
def atomic_output_dir(final_dir: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``final_dir``; move it there when the block succeeds.

    Raises UserError before yielding when ``final_dir`` exists (without ``overwrite``), is not
    an artifact directory (with it), is the working directory or one of its parents, or another
    build holds its lock; and after the block when ``final_dir`` changed during the build, or
    the disk filled up (one line, the partial build removed).
    """
    final = _output_path(final_dir)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"{final}: cannot create the output directory ({error.strerror or error})") from error
    with _locked(final):
        _remove_stale(final)
        checked = _check_target(final, overwrite)
        temporary = final.parent / f".{final.name}.tmp-{secrets.token_hex(4)}"
        temporary.mkdir()
        try:
            yield temporary
            with _signals_deferred():
                _commit(temporary, final, checked)
        except BaseException as error:
            with _signals_deferred():
                full = isinstance(error, Exception) and _disk_full(error, temporary)
                shutil.rmtree(temporary, ignore_errors=True)
            if full:
                raise UserError(f"{final}: no space left on the device ({full}); the partial build was removed, "
                                "free some space or choose another --out") from error
            raise


def _output_path(final_dir: str | os.PathLike[str]) -> Path:
    """``final_dir`` made absolute (not resolved); UserError for the working directory or a parent of it."""
    final = Path(os.path.abspath(final_dir))
    if Path.cwd().resolve().is_relative_to(final.resolve()):
        raise UserError(f"--out {final_dir}: is the working directory or contains it; choose a new directory "
                        "(e.g. artifacts/NAME)")
    return final


@contextlib.contextmanager
def _locked(final: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``.NAME.lock`` beside ``final`` (removed on release).

    The lock file is unlinked while still locked; a build that opened it meanwhile finds its
    file gone (another inode at the path, or none) once it gets the lock, and starts again.
    """
    path = final.parent / f".{final.name}.lock"
    while True:
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as error:
            raise UserError(f"{final}: cannot create the output directory ({error.strerror or error})") from error
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise UserError(f"{final}: another build is writing it (it holds {path}); wait for it to end or "
                            "choose another --out") from None
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.fstat(descriptor), os.stat(path, follow_symlinks=False)):
                break
        os.close(descriptor)
    try:
        yield
    finally:
        os.unlink(path)
        os.close(descriptor)


def _remove_stale(final: Path) -> None:
    """Remove ``.NAME.tmp-XXXXXXXX`` directories of killed builds (called with the lock held).

    Eight characters as ``secrets.token_hex(4)`` or ``tempfile`` make them: a scratch directory
    of the build made with ``tempfile.TemporaryDirectory(prefix=".NAME.tmp-", dir=...)`` is
    cleaned up too.
    """
    pattern = re.compile(rf"\.{re.escape(final.name)}\.tmp-[0-9a-z_]{{8}}")
    for entry in final.parent.iterdir():
        if pattern.fullmatch(entry.name) and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)


def _check_target(final: Path, overwrite: bool) -> os.stat_result | None:
    """None when ``final`` does not exist; its stat when it is an artifact directory to overwrite."""
    try:
        info = os.lstat(final)
    except FileNotFoundError:
        return None
    if not overwrite:
        raise UserError(f"{final}: already exists; pass --overwrite to replace it")
    reason = _not_artifacts(final)
    if reason:
        raise UserError(f"{final}: {reason}; --overwrite replaces only an artifact directory written by "
                        "mmg-export build (remove it yourself or choose another --out)")
    return info


def _not_artifacts(path: Path) -> str | None:
    """Why ``path`` is not one of our artifact directories, or None when it is."""
    if path.is_symlink():
        return "is a symbolic link"
    if not path.is_dir():
        return "is not a directory"
    try:
        manifest = load_manifest(path)
    except UserError as error:
        return f"is not an artifact directory of this version ({error})"
    unlisted = unlisted_files(path, manifest)
    if unlisted:
        return f"holds {unlisted[0]}, which its manifest does not list"
    return None


def _commit(temporary: Path, final: Path, checked: os.stat_result | None) -> None:
    """Move ``temporary`` to ``final``: onto nothing, or in exchange for exactly the checked directory."""
    if checked is None:
        try:
            _rename(temporary, final, RENAME_NOREPLACE)
        except FileExistsError:
            raise UserError(f"{final}: appeared during the build (not made by it); left as it is, the new build "
                            "was discarded") from None
        return
    try:
        _rename(temporary, final, RENAME_EXCHANGE)
    except FileNotFoundError:
        raise UserError(f"{final}: removed during the build; the new build was discarded") from None
    old = temporary  # after the exchange, what was at ``final``
    if not os.path.samestat(os.lstat(old), checked) or _not_artifacts(old):
        _rename(old, final, RENAME_EXCHANGE)
        raise UserError(f"{final}: replaced or changed during the build; left as it is, the new build was discarded")
    shutil.rmtree(old)


def _rename(source: Path, target: Path, flags: int) -> None:
    """``renameat2(source, target, flags)``; where the C library or the filesystem lacks it, the
    same effect with plain renames after a check (a short window in which a change goes unseen)."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is not None:
        if renameat2(AT_FDCWD, os.fsencode(source), AT_FDCWD, os.fsencode(target), flags) == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.ENOSYS, errno.EINVAL):
            raise OSError(code, os.strerror(code), str(source), None, str(target))
    if flags == RENAME_NOREPLACE:
        if os.path.lexists(target):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(target))
        os.rename(source, target)
        return
    aside = target.parent / f".{target.name}.tmp-{secrets.token_hex(4)}"
    os.rename(target, aside)
    os.rename(source, target)
    os.rename(aside, source)


def _disk_full(error: Exception, directory: Path) -> str:
    """A description of the full disk when ``error`` came from one (ENOSPC/EDQUOT anywhere in its
    chain, or under :data:`DISK_FULL_BYTES` left next to ``directory``), else ''."""
    written = sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())
    free = shutil.disk_usage(directory).free
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
            break
        cause = cause.__cause__ or cause.__context__
    if cause is None and free >= DISK_FULL_BYTES:
        return ""
    first_line = (str(error).splitlines() or [type(error).__name__])[0][:120]
    return f"{_mib(free)} free after writing {_mib(written)}; the error was: {first_line}"


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends, then deliver them to the handlers in place.

    Python runs signal handlers in the main thread only, and other threads (torch's) may take
    the signal, so masking is no help: the handlers are swapped for recorders instead.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {number: signal.signal(number, lambda number, frame: received.append(number))
                for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        for number in received:
            signal.raise_signal(number)
