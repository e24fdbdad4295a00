"""download(): checksums, atomic install, resume, mirrors and safe tar extraction, against a
local threaded HTTP server on 127.0.0.1 (no test touches the internet)."""
import gzip
import hashlib
import http.server
import io
import tarfile
import threading
import time

import numpy as np
import pytest

from binarynet import data
from binarynet.data import fetch
from binarynet.data import datadir
from binarynet.errors import DataError
from test_data_formats import cifar_bin_bytes, idx_bytes, random_cifar, random_mnist, small_cifar_batches

MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.root``; honours ``Range: bytes=N-`` when ``server.ranges``; sends only
    ``server.cut_after`` bytes of a body (then closes) to imitate a dropped connection; waits
    ``server.delay`` seconds before answering (a slow mirror)."""

    def do_GET(self):
        server = self.server
        server.log.append((self.path, self.headers.get("Range")))
        time.sleep(server.delay)
        path = server.root / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        body = path.read_bytes()
        start = 0
        requested = self.headers.get("Range")
        if requested and server.ranges:
            start = int(requested.removeprefix("bytes=").rstrip("-"))
            if start >= len(body):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if server.cut_after is not None:
            payload = payload[:server.cut_after]
        self.wfile.write(payload)
        server.sent += len(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path, monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("BINARYNET_DATA_URL", raising=False)
    monkeypatch.delenv("BINARYNET_DATA", raising=False)
    monkeypatch.setattr(datadir, "SYSTEM_DATA_DIRS", ())
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.root = tmp_path / "www"
    httpd.root.mkdir()
    httpd.log, httpd.sent, httpd.ranges, httpd.cut_after, httpd.delay = [], 0, True, None, 0.0
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def sha256(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def serve_mnist(server, n_train=3, n_test=2):
    """Put small MNIST .gz files at <server>/mnist/; return {name: bytes}."""
    folder = server.root / "mnist"
    folder.mkdir()
    files = {}
    for prefix, n, seed in (("train", n_train, 1), ("t10k", n_test, 2)):
        images, labels = random_mnist(n, seed)
        files[f"{prefix}-images-idx3-ubyte.gz"] = gzip.compress(idx_bytes(images))
        files[f"{prefix}-labels-idx1-ubyte.gz"] = gzip.compress(idx_bytes(labels))
    for name, raw in files.items():
        (folder / name).write_bytes(raw)
    return files


def listing(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_mnist(server, tmp_path):
    files = serve_mnist(server)
    sums = {name: sha256(raw) for name, raw in files.items()}
    target = data.download("mnist", tmp_path / "data", base_url=server.url, checksums=sums)
    assert target == tmp_path / "data" / "mnist"
    assert listing(target) == sorted(MNIST_FILES)
    for name, raw in files.items():
        assert (target / name).read_bytes() == raw
    assert sorted(path for path, _ in server.log) == sorted(f"/mnist/{n}" for n in MNIST_FILES)
    test = data.load("mnist", "test", data_dir=tmp_path / "data")
    assert len(test) == 2
    server.log.clear()
    data.download("mnist", tmp_path / "data", base_url=server.url, checksums=sums)
    assert server.log == []                       # present files are not fetched again


def test_concurrent_downloads_into_one_folder_take_turns(server, tmp_path):
    # Two torchrun ranks (say) fetching into one shared folder: the second waits for the first's
    # lock, then finds the files present. Without the lock both would write the same .part files.
    files = serve_mnist(server)
    sums = {name: sha256(raw) for name, raw in files.items()}
    server.delay = 0.1
    errors = []

    def fetch_mnist():
        try:
            data.download("mnist", tmp_path / "data", base_url=server.url, checksums=sums)
        except Exception as exc:  # reported below, with the other thread's outcome
            errors.append(exc)

    threads = [threading.Thread(target=fetch_mnist) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    target = tmp_path / "data" / "mnist"
    assert listing(target) == sorted(MNIST_FILES)
    assert all((target / name).read_bytes() == raw for name, raw in files.items())
    assert sorted(path for path, _ in server.log) == sorted(f"/mnist/{n}" for n in MNIST_FILES)


def test_env_url_and_load_with_download(server, tmp_path, monkeypatch):
    files = serve_mnist(server)
    monkeypatch.setenv("BINARYNET_DATA_URL", server.url + "/")
    monkeypatch.setenv("BINARYNET_DATA", str(tmp_path / "data"))
    sums = {name: sha256(raw) for name, raw in files.items()}
    with pytest.raises(DataError, match="not found"):
        data.load("mnist", "test")
    # The default (published) checksums reject these synthetic files: nothing is installed.
    with pytest.raises(DataError, match="SHA-256 mismatch"):
        data.load("mnist", "test", download=True)
    assert listing(tmp_path / "data" / "mnist") == []
    data.download("mnist", parts=("test",), checksums=sums)
    assert listing(tmp_path / "data" / "mnist") == ["t10k-images-idx3-ubyte.gz",
                                                   "t10k-labels-idx1-ubyte.gz"]
    assert len(data.load("mnist", "test", download=True)) == 2


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    files = serve_mnist(server)
    sums = {name: sha256(raw) for name, raw in files.items()}
    damaged = bytearray(files["t10k-images-idx3-ubyte.gz"])
    damaged[20] ^= 1
    (server.root / "mnist" / "t10k-images-idx3-ubyte.gz").write_bytes(bytes(damaged))
    with pytest.raises(DataError) as info:
        data.download("mnist", tmp_path, parts=("test",), base_url=server.url, checksums=sums)
    message = str(info.value)
    assert "/mnist/t10k-images-idx3-ubyte.gz: SHA-256 mismatch" in message
    assert sums["t10k-images-idx3-ubyte.gz"] in message and sha256(damaged) in message
    assert listing(tmp_path / "mnist") == []      # no .part, no final file


def test_resume_with_range_request(server, tmp_path):
    files = serve_mnist(server, n_train=40)
    sums = {name: sha256(raw) for name, raw in files.items()}
    name = "train-images-idx3-ubyte.gz"
    raw = files[name]
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / f"{name}.part").write_bytes(raw[:1000])
    data.download("mnist", tmp_path, parts=("train",), base_url=server.url, checksums=sums)
    assert (tmp_path / "mnist" / name).read_bytes() == raw
    assert (f"/mnist/{name}", "bytes=1000-") in server.log
    assert server.sent == len(raw) - 1000 + len(files["train-labels-idx1-ubyte.gz"])
    assert listing(tmp_path / "mnist") == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]


def test_restart_when_server_ignores_range(server, tmp_path):
    files = serve_mnist(server, n_train=40)
    sums = {name: sha256(raw) for name, raw in files.items()}
    name = "train-images-idx3-ubyte.gz"
    server.ranges = False
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / f"{name}.part").write_bytes(files[name][:1000])
    data.download("mnist", tmp_path, parts=("train",), base_url=server.url, checksums=sums)
    assert (tmp_path / "mnist" / name).read_bytes() == files[name]   # not 1000 bytes doubled


def test_stale_partial_file_is_downloaded_afresh(server, tmp_path):
    files = serve_mnist(server)
    sums = {name: sha256(raw) for name, raw in files.items()}
    name = "t10k-labels-idx1-ubyte.gz"
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / f"{name}.part").write_bytes(b"garbage from another file")
    data.download("mnist", tmp_path, parts=("test",), base_url=server.url, checksums=sums)
    assert (tmp_path / "mnist" / name).read_bytes() == files[name]
    assert [r for p, r in server.log if p.endswith(name)] == ["bytes=25-", None]


def test_dropped_connection_keeps_partial_file_then_resumes(server, tmp_path):
    files = serve_mnist(server, n_train=40)
    sums = {name: sha256(raw) for name, raw in files.items()}
    name = "train-images-idx3-ubyte.gz"
    server.cut_after = 5000
    with pytest.raises(DataError, match=r"could not download train-images-idx3-ubyte.gz.*"
                                        r"closed after 5000 of \d+ bytes.*resumed next time"):
        data.download("mnist", tmp_path, parts=("train",), base_url=server.url, checksums=sums)
    assert (tmp_path / "mnist" / f"{name}.part").read_bytes() == files[name][:5000]
    server.cut_after = None
    data.download("mnist", tmp_path, parts=("train",), base_url=server.url, checksums=sums)
    assert (tmp_path / "mnist" / name).read_bytes() == files[name]
    assert (f"/mnist/{name}", "bytes=5000-") in server.log


def test_missing_on_server_and_mirror_fallback(server, tmp_path, monkeypatch):
    files = serve_mnist(server)
    sums = {name: sha256(raw) for name, raw in files.items()}
    with pytest.raises(DataError, match=r"could not download t10k-images-idx3-ubyte.gz: "
                                        r"http://127.0.0.1:\d+/nowhere/mnist/t10k-images-idx3"
                                        r"-ubyte.gz: HTTP Error 404.*BINARYNET_DATA_URL") as error:
        data.download("mnist", tmp_path, parts=("test",), base_url=server.url + "/nowhere",
                      checksums=sums)
    assert "partial download" not in str(error.value)  # nothing was kept, so none is promised
    assert listing(tmp_path / "mnist") == []
    monkeypatch.setattr(fetch, "mirror_urls", lambda name, base_url=None: [
        f"{server.url}/dead/mnist/", f"{server.url}/mnist/"])
    data.download("mnist", tmp_path, parts=("test",), checksums=sums)
    assert (tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz").read_bytes() == \
        files["t10k-images-idx3-ubyte.gz"]


def test_download_svhn_extra_only_on_request(server, tmp_path):
    (server.root / "svhn").mkdir()
    files = {name: f"MATLAB {name}".encode() for name in
             ("train_32x32.mat", "test_32x32.mat", "extra_32x32.mat")}
    for name, raw in files.items():
        (server.root / "svhn" / name).write_bytes(raw)
    sums = {name: sha256(raw) for name, raw in files.items()}
    data.download("svhn", tmp_path, base_url=server.url, checksums=sums)
    assert listing(tmp_path / "svhn") == ["test_32x32.mat", "train_32x32.mat"]
    data.download("svhn", tmp_path, parts=("extra",), base_url=server.url, checksums=sums)
    assert (tmp_path / "svhn" / "extra_32x32.mat").read_bytes() == files["extra_32x32.mat"]


def test_mirror_urls():
    assert fetch.mirror_urls("cifar10") == ["https://www.cs.toronto.edu/~kriz/"]
    assert fetch.mirror_urls("svhn", "http://m/x/") == ["http://m/x/svhn/"]
    assert fetch.mirror_urls("mnist")[0] == "https://ossci-datasets.s3.amazonaws.com/mnist/"


def test_missing_checksum_is_refused_before_fetching(server, tmp_path):
    serve_mnist(server)
    with pytest.raises(ValueError, match="no SHA-256 given for t10k-labels-idx1-ubyte.gz"):
        data.download("mnist", tmp_path, parts=("test",), base_url=server.url,
                      checksums={"t10k-images-idx3-ubyte.gz": "0" * 64})
    assert server.log == []
    with pytest.raises(ValueError, match="has no part 'extra'"):
        data.download("mnist", tmp_path, parts=("extra",))


# ---------------------------------------------------------------- CIFAR-10 tarball

CIFAR_BINS = tuple(f"data_batch_{i}.bin" for i in range(1, 6)) + ("test_batch.bin",)


def cifar_tarball(contents: dict, symlink: str | None = None) -> bytes:
    """A cifar-10-binary.tar.gz: {member path: bytes}, optionally one member as a symlink."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for member, raw in contents.items():
            info = tarfile.TarInfo(member)
            if member == symlink:
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(info)
            else:
                info.size = len(raw)
                tar.addfile(info, io.BytesIO(raw))
    return out.getvalue()


def serve_cifar(server, symlink=None):
    bins = {name: cifar_bin_bytes(*random_cifar(3, seed=i)) for i, name in enumerate(CIFAR_BINS)}
    contents = {f"cifar-10-batches-bin/{name}": raw for name, raw in bins.items()}
    contents["cifar-10-batches-bin/batches.meta.txt"] = b"airplane\n"
    contents["../escaped.bin"] = b"must never be written"
    tarball = cifar_tarball(contents, symlink)
    (server.root / "cifar10").mkdir()
    (server.root / "cifar10" / "cifar-10-binary.tar.gz").write_bytes(tarball)
    sums = {name: sha256(raw) for name, raw in bins.items()}
    sums["cifar-10-binary.tar.gz"] = sha256(tarball)
    return bins, sums


def test_download_cifar_tarball(server, tmp_path, monkeypatch):
    small_cifar_batches(monkeypatch, 3)
    bins, sums = serve_cifar(server)
    target = data.download("cifar10", tmp_path / "data", base_url=server.url, checksums=sums)
    assert listing(target) == sorted(CIFAR_BINS)             # no tarball, .part or extras
    for name, raw in bins.items():
        assert (target / name).read_bytes() == raw
    assert not list(tmp_path.rglob("escaped.bin"))
    test = data.load("cifar10", "test", data_dir=tmp_path / "data")
    np.testing.assert_array_equal(test.images.numpy(), random_cifar(3, seed=5)[0])
    # only missing members are (re)installed
    (target / "test_batch.bin").unlink()
    (target / "data_batch_1.bin").write_bytes(b"kept as is")
    data.download("cifar10", tmp_path / "data", base_url=server.url, checksums=sums)
    assert (target / "test_batch.bin").read_bytes() == bins["test_batch.bin"]
    assert (target / "data_batch_1.bin").read_bytes() == b"kept as is"


def test_cifar_member_checksum_mismatch_leaves_nothing(server, tmp_path):
    _, sums = serve_cifar(server)
    sums["data_batch_3.bin"] = "ab" * 32
    with pytest.raises(DataError, match=r"cifar-10-binary.tar.gz:data_batch_3.bin: SHA-256 mismatch"):
        data.download("cifar10", tmp_path, base_url=server.url, checksums=sums)
    assert listing(tmp_path / "cifar10") == []


def test_cifar_symlink_member_is_refused(server, tmp_path):
    _, sums = serve_cifar(server, symlink="cifar-10-batches-bin/data_batch_2.bin")
    with pytest.raises(DataError, match="data_batch_2.bin is not a regular file"):
        data.download("cifar10", tmp_path, base_url=server.url, checksums=sums)
    assert listing(tmp_path / "cifar10") == []


def test_cifar_archive_missing_member(server, tmp_path):
    contents = {f"cifar-10-batches-bin/{n}": b"x" for n in CIFAR_BINS if n != "test_batch.bin"}
    tarball = cifar_tarball(contents)
    (server.root / "cifar10").mkdir()
    (server.root / "cifar10" / "cifar-10-binary.tar.gz").write_bytes(tarball)
    sums = {n: sha256(b"x") for n in CIFAR_BINS} | {"cifar-10-binary.tar.gz": sha256(tarball)}
    with pytest.raises(DataError, match="archive lacks cifar-10-batches-bin/test_batch.bin"):
        data.download("cifar10", tmp_path, base_url=server.url, checksums=sums)
    assert listing(tmp_path / "cifar10") == []
