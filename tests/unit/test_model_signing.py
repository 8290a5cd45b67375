"""Signed manifests: with PREDICTQ_SIGNING_KEY, only versions signed with that key are loaded.

The manifest holds the sha256 of model.joblib and model.onnx, so a valid signature over it
vouches for every file; whoever can write storage but lacks the key cannot forge one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import SecretStr, ValidationError

from predictq.cli import main
from shared.errors import ModelIntegrityError
from shared.settings import Settings
from shared.storage import LocalStorage
from shared.store import (
    INTEGRITY_BAD_SIGNATURE,
    INTEGRITY_OK,
    INTEGRITY_UNSIGNED,
    MANIFEST_FILE,
    MODEL_FILE,
    SIGNATURE_FILE,
    ModelStore,
)
from shared.tables import file_sha256
from shared.training import TrainedModel

KEY = "k" * 32
OTHER_KEY = "o" * 32


def save(store: ModelStore, trained: TrainedModel, csv: Path) -> str:
    return store.save(trained, {"path": str(csv), "sha256": file_sha256(csv), "rows": 344})


def signed_store(root: Path, key: str = KEY) -> ModelStore:
    return ModelStore(LocalStorage(root), signing_key=key.encode())


def test_signed_version_loads_and_reports_ok(tmp_path: Path, species_model: TrainedModel, penguins_csv: Path) -> None:
    """save writes manifest.sig beside the manifest; load and integrity accept it."""
    store = signed_store(tmp_path)
    version = save(store, species_model, penguins_csv)

    assert (tmp_path / "models" / version / SIGNATURE_FILE).is_file()
    assert store.integrity(version) == INTEGRITY_OK
    assert store.load(version).version == version


def test_unsigned_version_is_refused_when_a_key_is_set(
    tmp_path: Path, species_model: TrainedModel, penguins_csv: Path
) -> None:
    """A version saved without the key (or with its signature deleted) is not unpickled."""
    version = save(ModelStore(LocalStorage(tmp_path)), species_model, penguins_csv)
    store = signed_store(tmp_path)

    assert store.integrity(version) == INTEGRITY_UNSIGNED
    with pytest.raises(ModelIntegrityError, match="unsigned"):
        store.load(version)


def test_version_signed_with_another_key_is_refused(
    tmp_path: Path, species_model: TrainedModel, penguins_csv: Path
) -> None:
    version = save(signed_store(tmp_path, OTHER_KEY), species_model, penguins_csv)
    store = signed_store(tmp_path)

    assert store.integrity(version) == INTEGRITY_BAD_SIGNATURE
    with pytest.raises(ModelIntegrityError, match="fails its signature"):
        store.load(version)


def test_swapped_model_with_a_recomputed_checksum_is_refused(
    tmp_path: Path, species_model: TrainedModel, mass_model: TrainedModel, penguins_csv: Path
) -> None:
    """Someone who can write storage replaces model.joblib and fixes its sha256 in the manifest:
    the checksum passes, the signature does not."""
    store = signed_store(tmp_path)
    version = save(store, species_model, penguins_csv)
    other = save(store, mass_model, penguins_csv)
    target = tmp_path / "models" / version
    (target / MODEL_FILE).write_bytes((tmp_path / "models" / other / MODEL_FILE).read_bytes())
    manifest = json.loads((target / MANIFEST_FILE).read_text())
    manifest["model_file"] = json.loads((tmp_path / "models" / other / MANIFEST_FILE).read_text())["model_file"]
    manifest.get("serving", {}).pop("onnx_file", None)
    (target / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))

    assert ModelStore(LocalStorage(tmp_path)).integrity(version) == INTEGRITY_OK  # the sha256 alone is fooled
    assert store.integrity(version) == INTEGRITY_BAD_SIGNATURE
    with pytest.raises(ModelIntegrityError, match="fails its signature"):
        store.load(version)


def test_without_a_key_nothing_is_signed_or_checked(
    tmp_path: Path, species_model: TrainedModel, penguins_csv: Path
) -> None:
    """No key: as before, no signature file, and signed or unsigned versions load alike."""
    plain = ModelStore(LocalStorage(tmp_path))
    version = save(plain, species_model, penguins_csv)
    signed = save(signed_store(tmp_path), species_model, penguins_csv)

    assert not (tmp_path / "models" / version / SIGNATURE_FILE).exists()
    assert plain.integrity(version) == plain.integrity(signed) == INTEGRITY_OK
    assert plain.load(signed).version == signed


def test_store_from_settings_uses_the_signing_key(
    tmp_path: Path, species_model: TrainedModel, penguins_csv: Path
) -> None:
    store = ModelStore.from_settings(Settings(data_dir=tmp_path, signing_key=KEY))
    version = save(store, species_model, penguins_csv)

    assert signed_store(tmp_path).integrity(version) == INTEGRITY_OK


@pytest.mark.parametrize("key", ["short", "change-me"])
def test_weak_signing_keys_are_refused(key: str) -> None:
    with pytest.raises(ValidationError, match="PREDICTQ_SIGNING_KEY"):
        Settings(signing_key=key)


def test_blank_signing_key_is_unset() -> None:
    assert Settings(signing_key="").signing_key is None


def test_cli_training_signs_with_the_key(tmp_path: Path, penguins_csv: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`predictq train` goes through the same store: with the key set its version is signed."""
    monkeypatch.setenv("PREDICTQ_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PREDICTQ_SIGNING_KEY", KEY)
    result = CliRunner().invoke(
        main, ["train", "--data", str(penguins_csv), "--target", "species", "--param", "n_estimators=5"]
    )

    assert result.exit_code == 0, result.output
    store = signed_store(tmp_path)
    version = store.active_version()
    assert store.integrity(version) == INTEGRITY_OK
    assert signed_store(tmp_path, OTHER_KEY).integrity(version) == INTEGRITY_BAD_SIGNATURE


def test_api_shows_and_refuses_an_unsigned_version(
    make_client: Callable, store: ModelStore, species_model: TrainedModel, save_model: Callable[..., str], problem_of
) -> None:
    """GET /models/<v> reports "unsigned"; activating it is a 409 problem saying why."""
    unsigned = save_model(species_model, activate=False)
    client = make_client(admin_token="t0ken", signing_key=SecretStr(KEY))

    assert client.get(f"/models/{unsigned}").get_json()["integrity"] == INTEGRITY_UNSIGNED
    response = client.post(f"/models/{unsigned}/activate", headers={"Authorization": "Bearer t0ken"})
    problem = problem_of(response, 409)
    assert problem["title"] == "Model integrity check failed"
    assert unsigned in problem["detail"] and "unsigned" in problem["detail"]
    assert store.active_version() is None
