"""Where predictq keeps files: one small interface, a local directory behind it.

Keys are ``/``-separated relative paths. Every write is atomic: a reader sees the old
bytes or the new ones, never half a file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Protocol


class Storage(Protocol):
    def read_bytes(self, key: str) -> bytes: ...

    def write_bytes(self, key: str, data: bytes, *, overwrite: bool = True) -> None: ...

    def exists(self, key: str) -> bool: ...

    def list_dirs(self, prefix: str) -> list[str]: ...


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
        path.parent.mkdir(parents=True, exist_ok=True)
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

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def list_dirs(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
