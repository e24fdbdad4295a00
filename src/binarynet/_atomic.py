"""Atomic file writes shared by checkpoints, packed model files and dataset downloads.

Pure Python (the torch-free engine uses it too). A crash at any moment leaves either the old
file or the complete new one, never a partial file. A process killed mid-write leaves its
temporary file (``<name>.<8 random characters>.tmp`` beside the target) behind; the writer of
the folder removes such leftovers with :func:`remove_stale_temps`.
"""
import os
import re
import tempfile

# tempfile.mkstemp names: prefix + 8 characters of [a-z0-9_] + suffix.
_RANDOM_PART = r"[a-z0-9_]{8}"
_SUFFIX = ".tmp"


def _temp_file(path) -> tuple:
    """``(fd, name)`` of a new temporary file beside ``path``, named after it."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    return tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=_SUFFIX, dir=folder)


def _install(target: str, fill) -> None:
    """Give a new temporary file beside ``target`` its contents (``fill(fd, name)``, which owns
    the open descriptor), rename it over ``target`` and fsync the folder; the temporary file is
    removed if anything fails."""
    fd, tmp = _temp_file(target)
    try:
        fill(fd, tmp)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(os.path.dirname(os.path.abspath(target)))


def atomic_write(path, write) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, fsync it, rename it over ``path``
    and fsync the folder; the temporary file is removed if anything fails."""

    def fill(fd, tmp):
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())

    _install(os.fspath(path), fill)


def atomic_link(source, target) -> None:
    """Make ``target`` the same file as ``source`` atomically (a hard link; a copy where the file
    system has none). ``source`` may later be replaced by a new file: ``target`` keeps this one."""
    source = os.fspath(source)

    def fill(fd, tmp):
        os.close(fd)
        os.unlink(tmp)  # os.link needs a free name; mkstemp only reserved a unique one
        try:
            os.link(source, tmp)
        except OSError:
            import shutil

            shutil.copyfile(source, tmp)

    _install(os.fspath(target), fill)


def remove_stale_temps(path) -> list:
    """Remove the temporary files that a killed :func:`atomic_write` / :func:`atomic_link` of
    ``path`` left beside it (only names of that exact pattern); returns the removed paths.

    Call it only where no other process writes ``path`` at the same time.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    pattern = re.compile(re.escape(os.path.basename(path) + ".") + _RANDOM_PART + re.escape(_SUFFIX))
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    removed = []
    for name in names:
        candidate = os.path.join(folder, name)
        if pattern.fullmatch(name) and os.path.isfile(candidate) and not os.path.islink(candidate):
            try:
                os.unlink(candidate)
            except FileNotFoundError:
                continue
            removed.append(candidate)
    return removed


def fsync_dir(folder) -> None:
    """Make a rename inside ``folder`` durable (not possible everywhere, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
