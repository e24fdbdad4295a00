"""Checksummed, resumable, atomic download of a dataset's distribution files.

Files come from the canonical mirrors of :mod:`binarynet.data.catalog` (MNIST: the PyTorch and
Google mirrors, then yann.lecun.com; CIFAR-10: the Toronto tarball; SVHN: ufldl.stanford.edu),
or from ``<base_url>/<name>/`` when a base URL is given (argument or ``$BINARYNET_DATA_URL``).

Each file is written to ``<file>.part`` in the target folder, fsynced, checked against its
SHA-256, and only then renamed (``os.replace``) to its final name. An interrupted download
leaves the ``.part`` file, which the next call resumes with an HTTP Range request (or restarts
when the server ignores the range). On a checksum mismatch the file is deleted (after one
fresh retry if it had been resumed) and DataError is raised; nothing is left behind.
Concurrent downloads of one dataset into one folder take turns under a lock on that folder.
Archives (CIFAR-10) are checked as a whole, then only the expected regular-file members are
streamed out by exact name (never ``extractall``), each checked against its own SHA-256.
"""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import tarfile
import urllib.error
import urllib.request
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Mapping

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

from .. import __version__
from .._atomic import fsync_dir
from ..errors import DataError
from . import catalog
from .datadir import present_files, resolve_data_dir

URL_ENV = "BINARYNET_DATA_URL"
_CHUNK = 1 << 20
_log = logging.getLogger(__name__)


class _BadDownload(DataError):
    """A downloaded file is corrupt: wrong SHA-256, or an archive that is damaged or lacks
    (or misrepresents) an expected member. Its files are deleted before this is raised."""


def mirror_urls(name: str, base_url: str | None = None) -> list[str]:
    """Base URLs (ending in "/") tried in order for dataset ``name``.

    ``base_url`` (else ``$BINARYNET_DATA_URL``) replaces the canonical mirrors with
    ``<base_url>/<name>/``: one mirror root can hold every dataset.
    """
    info = catalog.get(name)
    root = base_url or os.environ.get(URL_ENV)
    if root:
        return [f"{root.rstrip('/')}/{info.name}/"]
    return list(info.mirrors)


def sha256_of(path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch_one(url: str, part: Path, timeout: float) -> bool:
    """Download ``url`` into ``part``, resuming an existing partial file. True if resumed."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": f"binarynet/{__version__}"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                          timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # range not satisfiable: the partial file is unusable
            exc.close()
            part.unlink()
            return _fetch_one(url, part, timeout)
        raise
    with response:
        resumed = bool(offset) and response.status == 206 and \
            response.headers.get("Content-Range", "").startswith(f"bytes {offset}-")
        if offset and not resumed:
            _log.info("%s: server ignored the range request, restarting", url)
        length = response.headers.get("Content-Length")
        written = 0
        with open(part, "ab" if resumed else "wb") as out:
            for block in iter(lambda: response.read(_CHUNK), b""):
                out.write(block)
                written += len(block)
            out.flush()
            os.fsync(out.fileno())
    if length is not None and written != int(length):
        # urllib returns a short body without error when the connection drops; keep the
        # partial file so that the next call resumes it.
        raise ConnectionError(f"connection closed after {written} of {length} bytes")
    return resumed


def _fetch(urls: list[str], part: Path, target: Path, timeout: float) -> tuple[bool, str]:
    """Download into ``part`` from the first URL that answers: (resumed?, that URL)."""
    errors = []
    for url in urls:
        _log.info("downloading %s", url)
        try:
            return _fetch_one(url, part, timeout), url
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            errors.append(f"{url}: {exc}")
    kept = f" A partial download is kept as {part.name} and resumed next time." if part.exists() else ""
    raise DataError(
        f"could not download {part.name[:-len('.part')]}: {'; '.join(errors)}. Check the network "
        f"connection, set {URL_ENV} to a reachable mirror, or copy the files into {target} "
        f"by hand.{kept}")


def _check_sum(path: Path, expected: str, label: str) -> None:
    actual = sha256_of(path)
    if actual != expected.lower():
        raise _BadDownload(
            f"{label}: SHA-256 mismatch (expected {expected}, got {actual}): the download is "
            f"corrupted or the mirror serves another file. It was deleted; run the download "
            f"again, or set {URL_ENV} to another mirror.")


def _commit(tmp: Path, final: Path) -> None:
    os.replace(tmp, final)
    fsync_dir(final.parent)


def _extract(archive: Path, members: Mapping[str, str], target: Path,
             checksums: Mapping[str, str], label: str) -> None:
    """Stream ``members`` (member path -> local name) out of ``archive``, verify, then commit."""
    extracted: dict[str, Path] = {}
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                for member in tar:
                    local = members.get(member.name.removeprefix("./"))
                    if local is None or local in extracted:
                        continue  # only the expected names are ever written
                    if not member.isfile():
                        raise _BadDownload(f"{label}: member {member.name} is not a regular "
                                                f"file; refusing to extract it")
                    tmp = target / f"{local}.part"
                    extracted[local] = tmp
                    source = tar.extractfile(member)
                    with source, open(tmp, "wb") as out:
                        for block in iter(lambda: source.read(_CHUNK), b""):
                            out.write(block)
                        out.flush()
                        os.fsync(out.fileno())
        except (tarfile.TarError, EOFError, zlib.error) as exc:
            raise _BadDownload(f"{label}: corrupt archive ({exc}); it was deleted") from None
        missing = [m for m, local in members.items() if local not in extracted]
        if missing:
            raise _BadDownload(f"{label}: archive lacks {', '.join(missing)}; it was deleted")
        for local, tmp in extracted.items():
            _check_sum(tmp, checksums[local], f"{label}:{local}")
    except BaseException:
        for tmp in extracted.values():
            tmp.unlink(missing_ok=True)
        raise
    for local, tmp in extracted.items():
        _commit(tmp, target / local)


def _install(remote: catalog.Remote, wanted: list[str], urls: list[str], target: Path,
             checksums: Mapping[str, str], timeout: float) -> None:
    part = target / f"{remote.filename}.part"
    file_urls = [base + remote.filename for base in urls]
    for attempt in (1, 2):
        resumed, url = _fetch(file_urls, part, target, timeout)
        try:
            _check_sum(part, checksums[remote.filename], url)
            if remote.members:
                members = {m: local for m, local in remote.members.items() if local in wanted}
                _extract(part, members, target, checksums, remote.filename)
                part.unlink()
            else:
                _commit(part, target / remote.filename)
            return
        except _BadDownload:
            part.unlink(missing_ok=True)
            if resumed and attempt == 1:
                _log.info("%s: resumed download failed its checksum, downloading afresh",
                          remote.filename)
                continue
            raise


def download(name: str, data_dir=None, *, parts: Iterable[str] | None = None,
             base_url: str | None = None, checksums: Mapping[str, str] | None = None,
             timeout: float = 60.0) -> Path:
    """Fetch the missing files of dataset ``name`` into ``<data dir>/<name>/``; return that folder.

    ``data_dir`` is resolved by :func:`binarynet.data.resolve_data_dir`. ``parts`` selects
    "train", "test" (the default) and, for SVHN, "extra". ``base_url`` overrides the mirrors
    (see :func:`mirror_urls`). ``checksums`` maps every downloaded file name and archive member
    to its SHA-256 hex digest (default: the dataset's published sums). Files already present
    (under any accepted name) are not fetched again. Raises DataError on network failure, a
    checksum mismatch or an unwritable folder.
    """
    info = catalog.get(name)
    parts = tuple(info.default_parts if parts is None else parts)
    for p in parts:
        if p not in info.parts:
            raise ValueError(f"dataset {name!r} has no part {p!r}; expected one of {info.parts}")
    sums = info.checksums if checksums is None else checksums
    target = resolve_data_dir(data_dir) / info.name
    wanted = _missing(info, target, parts)
    if not wanted:
        return target
    remotes = {remote.filename: remote for remote in info.remotes}
    for filename, locals_ in wanted.items():
        remote = remotes[filename]
        needed = [remote.filename] + (locals_ if remote.members else [])
        lacking = [n for n in needed if n not in sums]
        if lacking:
            raise ValueError(f"no SHA-256 given for {', '.join(lacking)} of dataset {name!r}")
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create {target} ({exc.strerror or exc}); choose a writable "
                        f"folder with --data-dir or BINARYNET_DATA") from None
    urls = mirror_urls(name, base_url)
    with _exclusive(target):
        # Another process (a torchrun rank on another machine sharing this folder, say) may have
        # installed some files while this one waited for the lock.
        for filename, locals_ in _missing(info, target, parts).items():
            _install(remotes[filename], locals_, urls, target, sums, timeout)
    return target


def _missing(info, target: Path, parts) -> dict[str, list[str]]:
    """Remote file name -> the local names still lacking in ``target`` for ``parts``."""
    layout = info.layouts[0]
    wanted: dict[str, list[str]] = defaultdict(list)
    for p in parts:
        for names, path in zip(layout.parts[p], present_files(target, layout, p)):
            if path is None:
                wanted[info.remote_of(names[0]).filename].append(names[0])
    return wanted


@contextlib.contextmanager
def _exclusive(folder: Path):
    """Hold an exclusive advisory lock (flock) on the dataset folder itself, so that concurrent
    downloads into it take turns instead of writing the same ``.part`` file, and no lock file is
    left behind. Where the file system or platform cannot lock a folder (some network file
    systems, Windows), downloads go ahead unlocked."""
    if fcntl is None:
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            _log.info("%s: cannot lock the folder (%s); downloading without a lock", folder, exc)
        yield
    finally:
        os.close(fd)  # closing releases the lock
