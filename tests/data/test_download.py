"""Downloads from a local HTTP server: checksum, cache, atomic placement, errors, CLI."""

from __future__ import annotations

import functools
import hashlib
import threading
import zipfile
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from evorec.data.download import DATASETS, data_home, download
from evorec.data.formats import read_events
from evorec.errors import DataError

NAME = "ml-latest-small"
RATINGS = "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.0,964981247\n2,1,3.5,9649\n"
MOVIES = "movieId,title,genres\n1,Toy Story (1995),Adventure|Animation\n3,Heat (1995),Action\n"


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Keep test output clean."""


class Server:
    """A threaded HTTP server on 127.0.0.1 serving the files of ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        handler = functools.partial(_QuietHandler, directory=str(root))
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/datasets"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def publish(self, ratings: str = RATINGS, md5: str | None = None, raw: bytes | None = None):
        """Serve ``<NAME>.zip`` (from ``raw`` or a MovieLens layout) and its ``.md5`` file."""
        folder = self.root / "datasets"
        folder.mkdir(exist_ok=True)
        archive = folder / f"{NAME}.zip"
        if raw is not None:
            archive.write_bytes(raw)
        else:
            with zipfile.ZipFile(archive, "w") as zf:
                zf.writestr(f"{NAME}/ratings.csv", ratings)
                zf.writestr(f"{NAME}/movies.csv", MOVIES)
                zf.writestr(f"{NAME}/README.txt", "test data")
        digest = md5 or hashlib.md5(archive.read_bytes()).hexdigest()
        (folder / f"{NAME}.zip.md5").write_text(f"MD5 ({NAME}.zip) = {digest}\n")

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    root = tmp_path / "www"
    root.mkdir()
    srv = Server(root)
    yield srv
    if srv.thread.is_alive():
        srv.stop()


def leftovers(home: Path) -> list[str]:
    return sorted(p.name for p in home.iterdir() if p.name != NAME) if home.exists() else []


def test_registry_uses_official_urls() -> None:
    assert set(DATASETS) == {"ml-100k", "ml-1m", "ml-latest-small", "ml-20m"}
    base = "https://files.grouplens.org/datasets/movielens"
    assert DATASETS["ml-1m"].url(base) == f"{base}/ml-1m.zip"
    assert all(info.sha256 is None or len(info.sha256) == 64 for info in DATASETS.values())


def test_download_then_cache_hit_without_network(server: Server, tmp_path: Path) -> None:
    server.publish()
    home = tmp_path / "home"
    path = download(NAME, home=home, base_url=server.url, progress=False)
    assert path == home / NAME
    assert sorted(p.name for p in path.iterdir()) == ["README.txt", "movies.csv", "ratings.csv"]
    assert leftovers(home) == []
    assert read_events(path).events.height == 3
    server.stop()
    assert download(NAME, home=home, base_url=server.url, progress=False) == path


def test_md5_mismatch_leaves_nothing(server: Server, tmp_path: Path) -> None:
    server.publish(md5="0" * 32)
    home = tmp_path / "home"
    with pytest.raises(DataError, match="md5 mismatch") as info:
        download(NAME, home=home, base_url=server.url, progress=False)
    assert f"{server.url}/{NAME}.zip" in str(info.value)
    assert not (home / NAME).exists()
    assert leftovers(home) == []


def test_corrupt_archive_leaves_nothing(server: Server, tmp_path: Path) -> None:
    server.publish(raw=b"this is not a zip file")
    home = tmp_path / "home"
    with pytest.raises(DataError, match="cannot extract"):
        download(NAME, home=home, base_url=server.url, progress=False)
    assert not (home / NAME).exists()
    assert leftovers(home) == []


def test_force_replaces_the_cached_copy(server: Server, tmp_path: Path) -> None:
    home = tmp_path / "home"
    server.publish()
    path = download(NAME, home=home, base_url=server.url, progress=False)
    server.publish(ratings="userId,movieId,rating,timestamp\n9,1,1.0,964982703\n")
    assert download(NAME, home=home, base_url=server.url, progress=False) == path
    assert read_events(path).events.height == 3  # cached: not downloaded again
    download(NAME, home=home, base_url=server.url, progress=False, force=True)
    assert read_events(path).events["user_id"].to_list() == [9]
    assert leftovers(home) == []


def test_network_errors_name_the_url(server: Server, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="HTTP 404") as info:
        download(NAME, home=tmp_path / "home", base_url=server.url, progress=False)
    assert f"{server.url}/{NAME}.zip.md5" in str(info.value)
    server.stop()
    with pytest.raises(DataError, match="cannot download") as info:
        download(NAME, home=tmp_path / "home", base_url=server.url, progress=False)
    assert server.url in str(info.value)


def test_unknown_dataset_lists_known_ones(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown dataset 'ml-5m'") as info:
        download("ml-5m", home=tmp_path)
    assert all(name in str(info.value) for name in DATASETS)


def test_environment_overrides(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.publish()
    monkeypatch.setenv("EVOREC_HOME", str(tmp_path / "env-home"))
    monkeypatch.setenv("EVOREC_DOWNLOAD_URL", server.url)
    assert data_home() == tmp_path / "env-home"
    assert download(NAME) == tmp_path / "env-home" / NAME  # with the progress bar
    monkeypatch.delenv("EVOREC_HOME")
    assert data_home().name == "evorec"


def test_cli_download(server: Server, tmp_path: Path, run) -> None:
    server.publish()
    result = run("data", "download", NAME, "--home", tmp_path / "home", "--base-url", server.url)
    assert result.code == 0, result.err
    assert result.out.strip() == str(tmp_path / "home" / NAME)
    result = run("data", "download", "nope", "--home", tmp_path / "home")
    assert result.code == 1
    assert result.err.startswith("error: unknown dataset 'nope'")
    assert "Traceback" not in result.err
