"""The versioned model store: immutable versions, an atomic active pointer, verified loads."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import sklearn

from shared.errors import ModelIntegrityError, ModelNotFound, NoActiveModel
from shared.inputs import prepare
from shared.settings import Settings
from shared.storage import LocalStorage
from shared.store import ACTIVE_KEY, MANIFEST_FILE, MODEL_FILE, ModelStore
from shared.training import TrainedModel


def version_dir(store: ModelStore, version: str) -> Path:
    return store.storage.root / "models" / version


def rewrite_manifest(store: ModelStore, version: str, change: Callable[[dict], None]) -> None:
    """Edit a manifest on disk, as damage or another installation would (the store never rewrites one)."""
    path = version_dir(store, version) / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def test_saved_version_has_a_manifest_describing_the_model(
    store: ModelStore, species_model: TrainedModel, save_model
) -> None:
    """The manifest records task, classes, schema, metrics, checksum and library versions."""
    version = save_model(species_model, activate=False)

    manifest = store.manifest(version)
    model_bytes = (version_dir(store, version) / MODEL_FILE).read_bytes()
    assert manifest["version"] == version
    assert manifest["task"] == "classification"
    assert manifest["target"] == "species"
    assert manifest["classes"] == ["Adelie", "Chinstrap", "Gentoo"]
    assert manifest["feature_schema"] == species_model.schema.to_dict()
    assert manifest["metrics"]["holdout"] == species_model.metrics
    assert manifest["model_file"] == {
        "name": MODEL_FILE,
        "sha256": hashlib.sha256(model_bytes).hexdigest(),
        "bytes": len(model_bytes),
    }
    assert manifest["library_versions"]["scikit-learn"] == sklearn.__version__
    assert manifest["estimator"]["class"] == "sklearn.ensemble._forest.RandomForestClassifier"
    assert manifest["estimator"]["params"]["n_estimators"] == 20


def test_loaded_model_predicts_like_the_trained_one(
    store: ModelStore, species_model: TrainedModel, save_model, penguins
) -> None:
    """What comes back from disk is the same fitted pipeline."""
    version = save_model(species_model, activate=False)
    frame = prepare(penguins, species_model.schema).frame

    loaded = store.load(version)

    assert loaded.version == version
    assert loaded.schema == species_model.schema
    np.testing.assert_array_equal(loaded.pipeline.predict_proba(frame), species_model.pipeline.predict_proba(frame))


# Immutable versions


def test_saving_twice_gives_two_versions(store: ModelStore, species_model: TrainedModel, save_model) -> None:
    """Each save is a new version; nothing is replaced, and neither is activated by saving."""
    first = save_model(species_model, activate=False)
    second = save_model(species_model, activate=False)

    assert first != second
    assert sorted(store.versions()) == sorted([first, second])
    assert store.active_version() is None


def test_versions_are_listed_oldest_first(store: ModelStore, species_model: TrainedModel, save_model) -> None:
    """Versions saved in quick succession (same second) still list in the order they were saved."""
    saved = [save_model(species_model, activate=False) for _ in range(4)]

    assert store.versions() == saved


def test_a_version_file_cannot_be_overwritten(store: ModelStore, species_model: TrainedModel, save_model) -> None:
    """Writing over a version's model or manifest is refused and leaves the bytes as they were."""
    version = save_model(species_model, activate=False)
    before = (version_dir(store, version) / MODEL_FILE).read_bytes()

    for name in (MODEL_FILE, MANIFEST_FILE):
        with pytest.raises(FileExistsError, match="immutable"):
            store.storage.write_bytes(f"models/{version}/{name}", b"replacement", overwrite=False)

    assert (version_dir(store, version) / MODEL_FILE).read_bytes() == before
    store.load(version)  # still verifies


def test_version_without_manifest_is_not_listed(store: ModelStore, species_model: TrainedModel, save_model) -> None:
    """A directory whose manifest was never written (a crashed save) is no version."""
    version = save_model(species_model, activate=False)
    store.storage.write_bytes("models/20990101T000000Z-000000/model.joblib", b"half a save")

    assert store.versions() == [version]
    with pytest.raises(ModelNotFound):
        store.manifest("20990101T000000Z-000000")


@pytest.mark.parametrize("version", ["no-such-version", "..", "../models", ".hidden", "ACTIVE"])
def test_unknown_or_odd_version_names_are_not_found(store: ModelStore, version: str) -> None:
    """Unknown names, and names reaching outside the models directory, raise ModelNotFound."""
    with pytest.raises(ModelNotFound, match="No model version"):
        store.manifest(version)
    with pytest.raises(ModelNotFound):
        store.load(version)


# The active pointer


def test_nothing_is_active_in_a_new_store(store: ModelStore) -> None:
    """A new store has no active version, and load_active says how to get one."""
    assert store.active_version() is None
    with pytest.raises(NoActiveModel, match="predictq train"):
        store.load_active()


def test_activate_moves_the_pointer(store: ModelStore, species_model: TrainedModel, save_model) -> None:
    """activate() switches which version load_active() returns."""
    first = save_model(species_model)
    second = save_model(species_model, activate=False)
    assert store.load_active().version == first

    store.activate(second)

    assert store.active_version() == second
    assert store.load_active().version == second


def test_activating_an_unknown_version_is_refused(store: ModelStore, species_model: TrainedModel, save_model) -> None:
    """An unknown version never becomes active; the pointer stays where it was."""
    current = save_model(species_model)

    with pytest.raises(ModelNotFound):
        store.activate("20990101T000000Z-abcdef")

    assert store.active_version() == current


def test_pointer_is_written_to_a_temp_file_then_renamed(
    store: ModelStore, species_model: TrainedModel, save_model, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The new pointer is complete in a sibling temp file before os.replace swaps it in."""
    old, new = save_model(species_model), save_model(species_model, activate=False)
    active_path = store.storage.root / ACTIVE_KEY
    real_replace = os.replace
    seen = []

    def watching_replace(src: str, dst: str) -> None:
        seen.append(
            {
                "src": Path(src),
                "dst": Path(dst),
                "src_pointer": json.loads(Path(src).read_text())["version"],
                "dst_pointer": json.loads(Path(dst).read_text())["version"],
            }
        )
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", watching_replace)
    store.activate(new)

    (call,) = seen
    assert call["dst"] == active_path
    assert call["src"].parent == active_path.parent  # same filesystem, so the rename is atomic
    assert call["src"].name.startswith(".ACTIVE.")
    assert call["src_pointer"] == new  # the whole new pointer exists before the swap...
    assert call["dst_pointer"] == old  # ...while readers still see the whole old one
    assert not call["src"].exists()
    assert store.active_version() == new


def test_failed_pointer_write_leaves_the_old_pointer_and_no_temp_file(
    store: ModelStore, species_model: TrainedModel, save_model, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If writing the new pointer fails, the old one stays active and the temp file is removed."""
    old, new = save_model(species_model), save_model(species_model, activate=False)

    def failing_fsync(fd: int) -> None:
        raise OSError("disk full")

    with monkeypatch.context() as patched, pytest.raises(OSError, match="disk full"):
        patched.setattr(os, "fsync", failing_fsync)
        store.activate(new)

    assert store.active_version() == old
    assert [p.name for p in (store.storage.root / "models").iterdir() if p.name.startswith(".")] == []


def test_readers_never_see_a_partial_pointer(store: ModelStore, species_model: TrainedModel, save_model) -> None:
    """A reader polling while the pointer flips back and forth always reads one whole version."""
    versions = [save_model(species_model), save_model(species_model, activate=False)]
    reader_store = ModelStore(LocalStorage(store.storage.root))
    seen: set[str | None] = set()
    failures: list[Exception] = []
    done = threading.Event()

    def read_until_done() -> None:
        while not done.is_set():
            try:
                seen.add(reader_store.active_version())
            except Exception as exc:  # any failure to read is what this test looks for
                failures.append(exc)

    reader = threading.Thread(target=read_until_done)
    reader.start()
    try:
        for i in range(100):
            store.activate(versions[i % 2])
    finally:
        done.set()
        reader.join(timeout=10)

    assert failures == []
    assert seen <= set(versions)
    assert seen


# Verified loading


def test_tampered_model_file_is_refused(store: ModelStore, species_model: TrainedModel, save_model) -> None:
    """A model.joblib whose bytes differ from the manifest's checksum is never unpickled."""
    version = save_model(species_model)
    path = version_dir(store, version) / MODEL_FILE
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))

    with pytest.raises(ModelIntegrityError, match="fails its checksum"):
        store.load(version)
    with pytest.raises(ModelIntegrityError):
        store.load_active()


def test_other_scikit_learn_version_is_refused_by_default(
    store: ModelStore, species_model: TrainedModel, save_model
) -> None:
    """A model pickled by another scikit-learn is refused, and the message says how to proceed."""
    version = save_model(species_model)
    rewrite_manifest(store, version, lambda m: m["library_versions"].update({"scikit-learn": "0.24.2"}))

    with pytest.raises(ModelIntegrityError, match=r"scikit-learn 0\.24\.2") as exc:
        store.load(version)
    assert "PREDICTQ_ALLOW_VERSION_MISMATCH" in exc.value.detail


def test_other_scikit_learn_version_loads_with_a_warning_when_allowed(
    store: ModelStore, species_model: TrainedModel, save_model, caplog: pytest.LogCaptureFixture
) -> None:
    """allow_version_mismatch=True loads the model and logs a warning naming both versions."""
    version = save_model(species_model)
    rewrite_manifest(store, version, lambda m: m["library_versions"].update({"scikit-learn": "0.24.2"}))
    lenient = ModelStore(store.storage, allow_version_mismatch=True)

    with caplog.at_level(logging.WARNING, logger="shared.store"):
        loaded = lenient.load(version)

    assert loaded.version == version
    (record,) = [r for r in caplog.records if r.name == "shared.store"]
    assert record.levelno == logging.WARNING
    assert "0.24.2" in record.getMessage()
    assert sklearn.__version__ in record.getMessage()


def test_checksum_is_checked_even_when_version_mismatch_is_allowed(
    store: ModelStore, species_model: TrainedModel, save_model
) -> None:
    """allow_version_mismatch never lets a damaged file through."""
    version = save_model(species_model)
    (version_dir(store, version) / MODEL_FILE).write_bytes(b"not a pickle")

    with pytest.raises(ModelIntegrityError, match="fails its checksum"):
        ModelStore(store.storage, allow_version_mismatch=True).load(version)


def test_storage_keys_cannot_escape_the_root(tmp_path: Path) -> None:
    """LocalStorage refuses keys that resolve outside its directory."""
    storage = LocalStorage(tmp_path / "root")

    with pytest.raises(ValueError, match="escapes"):
        storage.write_bytes("../outside", b"x")
    assert not (tmp_path / "outside").exists()


# The local model cache (for object storage)


def test_cached_model_is_read_without_the_store(
    store: ModelStore, species_model: TrainedModel, save_model, tmp_path: Path
) -> None:
    """With cache_dir, the first load keeps the file by version; later loads use it, even once the store lost it."""
    version = save_model(species_model)
    cached = ModelStore(store.storage, cache_dir=tmp_path / "cache")
    first = cached.load(version)
    assert (tmp_path / "cache" / version / MODEL_FILE).read_bytes() == (
        version_dir(store, version) / MODEL_FILE
    ).read_bytes()

    (version_dir(store, version) / MODEL_FILE).unlink()
    assert ModelStore(store.storage, cache_dir=tmp_path / "cache").load(version).manifest == first.manifest
    with pytest.raises(ModelIntegrityError, match="missing"):
        store.load(version)  # without the cache: a manifest and no model file


def test_cached_model_failing_the_manifest_checksum_is_downloaded_again(
    store: ModelStore, species_model: TrainedModel, save_model, tmp_path: Path
) -> None:
    """A damaged cached file is never unpickled: the stored file is read again and replaces it."""
    version = save_model(species_model)
    cache_file = tmp_path / "cache" / version / MODEL_FILE
    ModelStore(store.storage, cache_dir=tmp_path / "cache").load(version)
    cache_file.write_bytes(b"not a pickle")

    assert ModelStore(store.storage, cache_dir=tmp_path / "cache").load(version).version == version
    assert cache_file.read_bytes() == (version_dir(store, version) / MODEL_FILE).read_bytes()


def test_a_model_failing_its_checksum_is_not_cached(
    store: ModelStore, species_model: TrainedModel, save_model, tmp_path: Path
) -> None:
    """A tampered stored file is refused and leaves nothing in the cache."""
    version = save_model(species_model)
    (version_dir(store, version) / MODEL_FILE).write_bytes(b"not a pickle")

    with pytest.raises(ModelIntegrityError, match="fails its checksum"):
        ModelStore(store.storage, cache_dir=tmp_path / "cache").load(version)
    assert not (tmp_path / "cache" / version).exists()


def test_store_from_settings_caches_only_for_object_storage(tmp_path: Path) -> None:
    """On the local data directory no cache is kept; with a store_url the cache is under data_dir."""
    assert ModelStore.from_settings(Settings(data_dir=tmp_path, store_url=None)).cache is None
    remote = ModelStore.from_settings(Settings(data_dir=tmp_path, store_url="memory://predictq-settings-test"))
    assert remote.cache.root == tmp_path / "cache" / "models"
