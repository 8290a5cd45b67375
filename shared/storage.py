"""Where predictq keeps files: one small interface, a local directory or an object store behind it.

Keys are ``/``-separated relative paths. Every write is atomic: a reader sees the old
bytes or the new ones, never half a file. On local disk every write is also durable once it
returns: the file is synced before it is renamed into place, and its directory after, so a
crash of the machine cannot leave a job or model pointing at a file that is empty or gone.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

if TYPE_CHECKING:
    from shared.settings import Settings

COPY_BLOCK_BYTES = 1 << 20
# Ranged GETs of this size when streaming an object: memory stays bounded whatever its size.
READ_BLOCK_BYTES = 8 << 20
S3_SCHEMES = ("s3://", "s3a://")


class Storage(Protocol):
    def read_bytes(self, key: str) -> bytes: ...

    def write_bytes(self, key: str, data: bytes, *, overwrite: bool = True) -> None: ...

    def exists(self, key: str) -> bool: ...

    def list_dirs(self, prefix: str) -> list[str]: ...

    def open_read(self, key: str) -> BinaryIO:
        """A binary file object reading the key from its start, to stream it without loading it whole."""
        ...

    def size(self, key: str) -> int: ...

    def put_file(self, local_path: Path, key: str, *, move: bool = False) -> None:
        """Store a local file under ``key`` (overwriting); ``move`` also removes the local file."""
        ...

    def get_file(self, key: str, local_path: Path) -> None:
        """Copy the key to a local file, which appears complete or not at all."""
        ...

    def delete_prefix(self, prefix: str) -> None:
        """Remove every key under ``prefix``; nothing there is not an error."""
        ...


def open_storage(settings: Settings) -> Storage:
    """The storage that ``settings`` name: ``store_url`` when set, else the data directory."""
    if settings.store_url is None:
        return LocalStorage(settings.data_dir)
    return ObjectStorage(settings.store_url, **_storage_options(settings))


def _storage_options(settings: Settings) -> dict:
    if not settings.store_url or not settings.store_url.startswith(S3_SCHEMES):
        return {}
    options: dict = {}
    if settings.s3_endpoint_url:
        options["endpoint_url"] = settings.s3_endpoint_url
    if settings.s3_access_key_id:
        options["key"] = settings.s3_access_key_id
    if settings.s3_secret_access_key:
        options["secret"] = settings.s3_secret_access_key.get_secret_value()
    if settings.s3_region:
        options["client_kwargs"] = {"region_name": settings.s3_region}
    return options


def _fsync_path(path: Path) -> None:
    """Flush a file's bytes, or a directory's entries, to disk (it need not be open for writing)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dirs(directory: Path) -> None:
    """Create ``directory`` and its missing parents, each new entry synced into its parent."""
    missing = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for created in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another writer made it meanwhile
            created.mkdir()
        _fsync_path(created.parent)


def _copy_file(source: Path, target: Path) -> None:
    """Copy through a temporary file beside ``target``, synced, renamed into place when complete."""
    _make_dirs(target.parent)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
            shutil.copyfileobj(src, out, COPY_BLOCK_BYTES)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_path(target.parent)


class LocalStorage:
    """A directory on local disk (or a volume shared by API and workers)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"key {key!r} escapes the storage root")
        return path

    def read_bytes(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def write_bytes(self, key: str, data: bytes, *, overwrite: bool = True) -> None:
        path = self._path(key)
        if not overwrite and path.exists():
            raise FileExistsError(f"{key} already exists and is immutable")
        _make_dirs(path.parent)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            if overwrite:
                os.replace(tmp, path)
            else:
                os.link(tmp, path)  # fails if the key exists, even when two writers race
                os.unlink(tmp)
        except FileExistsError as exc:
            Path(tmp).unlink(missing_ok=True)
            raise FileExistsError(f"{key} already exists and is immutable") from exc
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_path(path.parent)  # the rename itself survives a crash

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def list_dirs(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))

    def open_read(self, key: str) -> BinaryIO:
        return open(self._path(key), "rb")  # the caller owns and closes it

    def size(self, key: str) -> int:
        return self._path(key).stat().st_size

    def put_file(self, local_path: Path, key: str, *, move: bool = False) -> None:
        path, source = self._path(key), Path(local_path).resolve()
        if source == path:
            # Already in place (an upload saved where it is stored): made durable now.
            _fsync_path(path)
            _fsync_path(path.parent)
            return
        if move:
            _make_dirs(path.parent)
            _fsync_path(source)  # its bytes on disk before its name is
            try:
                os.replace(source, path)
                _fsync_path(path.parent)
                return
            except OSError as exc:
                if exc.errno != errno.EXDEV:  # another file system: copy instead
                    raise
        _copy_file(source, path)
        if move:
            source.unlink()

    def get_file(self, key: str, local_path: Path) -> None:
        path, target = self._path(key), Path(local_path)
        if not path.is_file():
            raise FileNotFoundError(f"no stored file {key!r}")
        if target.resolve() != path:
            _copy_file(path, target)

    def delete_prefix(self, prefix: str) -> None:
        path = self._path(prefix)
        if path == self.root.resolve():
            raise ValueError("refusing to delete the whole storage root")
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


class ObjectStorage:
    """Keys under a URL prefix on an object store, through fsspec (``s3://bucket/prefix`` via s3fs).

    One ``write_bytes`` or ``put_file`` is one PUT (or one multipart upload, which S3 makes
    visible only when complete), so every object write is atomic, and S3 reads are strongly
    consistent after a write. There are no directories: ``list_dirs`` lists common prefixes.

    Parameters
    ----------
    url : str
        ``protocol://bucket/prefix``; keys are stored under it.
    **storage_options
        For the fsspec filesystem (s3fs: ``endpoint_url``, ``key``, ``secret``, ``client_kwargs``).
        Without keys, s3fs uses the standard AWS credential chain.
    """

    def __init__(self, url: str, **storage_options: object):
        try:
            from fsspec.core import url_to_fs  # only object-store deployments need fsspec and s3fs

            # Another host writes versions, pointers and chunks: a cached listing would hide them.
            self.fs, root = url_to_fs(url, use_listings_cache=False, **storage_options)
        except ImportError as exc:
            raise ImportError(f"{url} needs the object storage extra: pip install 'predictq[s3]' ({exc})") from exc
        self.url = url
        self.root = root.rstrip("/")

    def __repr__(self) -> str:
        return f"ObjectStorage({self.url!r})"

    def _path(self, key: str) -> str:
        parts = key.split("/")
        if key.startswith("/") or any(part in ("", ".", "..") for part in parts):
            raise ValueError(f"key {key!r} is not a plain relative key")
        return f"{self.root}/{key}"

    def read_bytes(self, key: str) -> bytes:
        return self.fs.cat_file(self._path(key))

    def write_bytes(self, key: str, data: bytes, *, overwrite: bool = True) -> None:
        path = self._path(key)
        # Check, then put: two writers racing on one new key could both pass the check, and the
        # later PUT wins. Keys written with overwrite=False are model versions, whose names carry
        # a timestamp and a random suffix, so such a race needs two saves of one name. Conditional
        # PUTs (If-None-Match) would close it, but not every S3-compatible server honours them.
        if not overwrite and self.fs.exists(path):
            raise FileExistsError(f"{key} already exists and is immutable")
        self.fs.pipe_file(path, data)

    def exists(self, key: str) -> bool:
        return self.fs.exists(self._path(key))

    def list_dirs(self, prefix: str) -> list[str]:
        try:
            entries = self.fs.ls(self._path(prefix), detail=True)
        except FileNotFoundError:
            return []
        names = (entry["name"].rstrip("/").rsplit("/", 1)[-1] for entry in entries if entry["type"] == "directory")
        return sorted(name for name in names if not name.startswith("."))

    def open_read(self, key: str) -> BinaryIO:
        return self.fs.open(self._path(key), "rb", block_size=READ_BLOCK_BYTES)

    def size(self, key: str) -> int:
        return self.fs.size(self._path(key))

    def put_file(self, local_path: Path, key: str, *, move: bool = False) -> None:
        self.fs.put_file(str(local_path), self._path(key))
        if move:
            Path(local_path).unlink()

    def get_file(self, key: str, local_path: Path) -> None:
        target = Path(local_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        os.close(fd)
        try:
            self.fs.get_file(self._path(key), tmp)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def delete_prefix(self, prefix: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self._path(prefix), recursive=True)
