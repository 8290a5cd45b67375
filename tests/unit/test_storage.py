"""The Storage protocol, the same for a local directory and an object store (fsspec's in-memory one here)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from shared.settings import Settings
from shared.storage import LocalStorage, ObjectStorage, Storage, open_storage


@pytest.fixture(params=["local", "object"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    """A LocalStorage in tmp_path, or an ObjectStorage under a fresh prefix of the memory filesystem."""
    if request.param == "local":
        return LocalStorage(tmp_path / "root")
    return ObjectStorage(f"memory://predictq-{uuid.uuid4().hex}/prefix")


def test_bytes_round_trip(storage: Storage) -> None:
    """What write_bytes stores, read_bytes, open_read and size give back; exists follows it."""
    assert not storage.exists("a/b.bin")
    storage.write_bytes("a/b.bin", b"hello")
    assert storage.exists("a/b.bin")
    assert storage.read_bytes("a/b.bin") == b"hello"
    assert storage.size("a/b.bin") == 5
    with storage.open_read("a/b.bin") as handle:
        assert handle.read(2) == b"he"
        assert handle.read() == b"llo"
    storage.write_bytes("a/b.bin", b"bye")
    assert storage.read_bytes("a/b.bin") == b"bye"


def test_missing_key_is_file_not_found(storage: Storage) -> None:
    """Reading or sizing a key never written raises FileNotFoundError, as a missing file does."""
    for read in (storage.read_bytes, storage.open_read, storage.size):
        with pytest.raises(FileNotFoundError):
            read("nothing/here")


def test_overwrite_false_refuses_an_existing_key(storage: Storage) -> None:
    """An immutable write to a key that exists fails and leaves the first bytes."""
    storage.write_bytes("v1/model.joblib", b"first", overwrite=False)
    with pytest.raises(FileExistsError, match="immutable"):
        storage.write_bytes("v1/model.joblib", b"second", overwrite=False)
    assert storage.read_bytes("v1/model.joblib") == b"first"


def test_list_dirs_lists_prefixes_not_files(storage: Storage) -> None:
    """list_dirs names the "directories" under a prefix, sorted, without files or hidden names."""
    for key in ("models/v2/m.json", "models/v1/m.json", "models/v1/x/deep", "models/ACTIVE", "models/.tmp/x"):
        storage.write_bytes(key, b"{}")
    assert storage.list_dirs("models") == ["v1", "v2"]
    assert storage.list_dirs("nothing") == []


def test_put_file_copies_or_moves(storage: Storage, tmp_path: Path) -> None:
    """put_file stores a local file; with move the local file is gone afterwards."""
    kept, moved = tmp_path / "kept.csv", tmp_path / "moved.csv"
    kept.write_bytes(b"a,b\n1,2\n")
    moved.write_bytes(b"c\n3\n")
    storage.put_file(kept, "jobs/1/kept.csv")
    storage.put_file(moved, "jobs/1/moved.csv", move=True)
    assert kept.exists()
    assert not moved.exists()
    assert storage.read_bytes("jobs/1/kept.csv") == b"a,b\n1,2\n"
    assert storage.read_bytes("jobs/1/moved.csv") == b"c\n3\n"


def test_get_file_makes_a_local_copy(storage: Storage, tmp_path: Path) -> None:
    """get_file writes the key's bytes to a local path, creating its directory, and leaves no temp file."""
    storage.write_bytes("jobs/1/training.csv", b"x,y\n1,2\n")
    target = tmp_path / "scratch" / "training.csv"
    storage.get_file("jobs/1/training.csv", target)
    assert target.read_bytes() == b"x,y\n1,2\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["training.csv"]
    with pytest.raises(FileNotFoundError):
        storage.get_file("jobs/1/none.csv", tmp_path / "none.csv")


def test_delete_prefix_removes_only_what_is_under_it(storage: Storage) -> None:
    """delete_prefix removes every key under the prefix, leaves its neighbours, and ignores nothing there."""
    for key in ("jobs/1/input.csv", "jobs/1/chunks/00000.in.pkl", "jobs/12/input.csv"):
        storage.write_bytes(key, b"x")
    storage.delete_prefix("jobs/1/chunks")
    assert not storage.exists("jobs/1/chunks/00000.in.pkl")
    assert storage.exists("jobs/1/input.csv")
    storage.delete_prefix("jobs/1")
    assert not storage.exists("jobs/1/input.csv")
    assert storage.exists("jobs/12/input.csv")
    storage.delete_prefix("jobs/404")


@pytest.mark.parametrize("key", ["../escape", "a/../../escape"])
def test_keys_cannot_leave_the_root(storage: Storage, key: str) -> None:
    """A key that climbs out of the storage root is refused before any read or write."""
    with pytest.raises(ValueError, match="key"):
        storage.write_bytes(key, b"x")


def test_local_put_and_get_of_the_stored_file_itself_change_nothing(tmp_path: Path) -> None:
    """On local storage a path may be the stored file itself: put (even with move) and get leave it in place."""
    storage = LocalStorage(tmp_path)
    storage.write_bytes("jobs/1/input.csv", b"a\n1\n")
    path = tmp_path / "jobs" / "1" / "input.csv"
    storage.put_file(path, "jobs/1/input.csv", move=True)
    storage.get_file("jobs/1/input.csv", path)
    assert path.read_bytes() == b"a\n1\n"


def test_local_storage_refuses_to_delete_its_root(tmp_path: Path) -> None:
    """delete_prefix of the whole root is refused rather than emptying the data directory."""
    with pytest.raises(ValueError, match="root"):
        LocalStorage(tmp_path).delete_prefix(".")


def test_open_storage_is_the_data_dir_without_a_store_url(tmp_path: Path) -> None:
    """No store_url: models and jobs stay under data_dir."""
    storage = open_storage(Settings(data_dir=tmp_path, store_url=None))
    assert isinstance(storage, LocalStorage)
    assert storage.root == tmp_path


def test_open_storage_passes_s3_settings_to_s3fs(tmp_path: Path) -> None:
    """An s3:// store_url opens s3fs with the endpoint, keys and region from settings (no request made)."""
    settings = Settings(
        data_dir=tmp_path,
        store_url="s3://bucket/some/prefix/",
        s3_endpoint_url="http://127.0.0.1:9000",
        s3_access_key_id="id",
        s3_secret_access_key="s3-sekrit-value",
        s3_region="eu-west-1",
    )
    storage = open_storage(settings)
    assert isinstance(storage, ObjectStorage)
    assert storage.root == "bucket/some/prefix"
    assert storage.fs.endpoint_url == "http://127.0.0.1:9000"
    assert (storage.fs.key, storage.fs.secret) == ("id", "s3-sekrit-value")
    assert storage.fs.client_kwargs == {"region_name": "eu-west-1"}
    assert "s3-sekrit-value" not in repr(settings)


def test_blank_store_settings_are_unset_and_a_bare_path_is_refused(tmp_path: Path) -> None:
    """Blank values (docker-compose passes unset variables as "") mean unset; a store_url needs a scheme."""
    settings = Settings(data_dir=tmp_path, store_url=" ", s3_endpoint_url="", s3_secret_access_key="")
    assert (settings.store_url, settings.s3_endpoint_url, settings.s3_secret_access_key) == (None, None, None)
    with pytest.raises(ValueError, match="s3://bucket/prefix"):
        Settings(data_dir=tmp_path, store_url="bucket/prefix")


# --- durability on local disk --------------------------------------------------------------


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Record what each os.fsync flushed (a file or a directory), in order."""
    flushed: list[Path] = []
    fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        flushed.append(Path(os.readlink(f"/proc/self/fd/{fd}")))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    return flushed


def test_write_bytes_syncs_the_file_then_its_directory(tmp_path: Path, synced: list[Path]) -> None:
    """A write is on disk before it is renamed into place, and the rename is synced into its directory;
    each directory created on the way is synced into its parent."""
    LocalStorage(tmp_path).write_bytes("jobs/1/chunks/00000.in.arrow", b"rows")
    chunks = tmp_path / "jobs" / "1" / "chunks"
    assert synced[:3] == [tmp_path, tmp_path / "jobs", tmp_path / "jobs" / "1"]  # new directories
    assert synced[3].parent == chunks and synced[3].name.startswith(".00000.in.arrow.")  # the temporary file
    assert synced[4:] == [chunks]


@pytest.mark.parametrize("overwrite", [True, False])
def test_every_write_to_an_existing_directory_syncs_file_and_directory(
    tmp_path: Path, synced: list[Path], overwrite: bool
) -> None:
    """Overwriting or immutable (model files), a write ends with the file and its directory synced."""
    storage = LocalStorage(tmp_path)
    storage.write_bytes("v/other", b"x")
    synced.clear()
    storage.write_bytes("v/file", b"y", overwrite=overwrite)
    assert [path.parent for path in synced] == [tmp_path / "v", tmp_path]


def test_put_file_syncs_a_moved_file_before_its_rename(tmp_path: Path, synced: list[Path]) -> None:
    """A scratch file moved into storage (a joined result) is synced, renamed, then its directory synced."""
    storage = LocalStorage(tmp_path / "root")
    storage.write_bytes("jobs/1/input.json", b"[]")
    scratch = tmp_path / "root" / "jobs" / "1" / ".join-x" / "result.csv"
    scratch.parent.mkdir()
    scratch.write_bytes(b"a\n1\n")
    synced.clear()
    storage.put_file(scratch, "jobs/1/result.csv", move=True)
    assert synced == [scratch, tmp_path / "root" / "jobs" / "1"]
    assert (tmp_path / "root" / "jobs" / "1" / "result.csv").read_bytes() == b"a\n1\n"


def test_put_file_of_a_file_already_in_place_syncs_it(tmp_path: Path, synced: list[Path]) -> None:
    """An upload saved where it is stored is made durable when stored, though it is not moved."""
    path = tmp_path / "jobs" / "1" / "input.csv"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"a\n1\n")
    LocalStorage(tmp_path).put_file(path, "jobs/1/input.csv", move=True)
    assert synced == [path, path.parent]


def test_get_file_copy_is_synced_before_it_appears(tmp_path: Path, synced: list[Path]) -> None:
    """A copy appears complete or not at all, and survives a crash once get_file returns."""
    storage = LocalStorage(tmp_path / "root")
    storage.write_bytes("k", b"data")
    (tmp_path / "copy").mkdir()
    synced.clear()
    storage.get_file("k", tmp_path / "copy" / "k")
    assert synced[0].name.startswith(".k.") and synced[1:] == [tmp_path / "copy"]
