"""Versioned models: each version immutable, one atomically switched "active" pointer."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import platform
import re
import secrets
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import joblib
import numpy as np
import pandas as pd
import sklearn
from sklearn.pipeline import Pipeline

from shared.compiled import engine_for
from shared.engine import Engine, gives_probabilities
from shared.errors import ModelIntegrityError, ModelNotFound, NoActiveModel
from shared.schema import FeatureSchema
from shared.storage import LocalStorage, Storage, open_storage
from shared.training import COMPARISON_METRIC, TrainedModel, classes_of
from shared.values import to_json_value

if TYPE_CHECKING:
    from shared.settings import Settings

log = logging.getLogger(__name__)

MODELS_PREFIX = "models"
ACTIVE_KEY = "models/ACTIVE"
MODEL_FILE = "model.joblib"
ONNX_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
# HMAC-SHA256 (hex) of manifest.json's exact bytes, under a key that is never in storage.
SIGNATURE_FILE = "manifest.sig"
INTEGRITY_OK = "ok"
INTEGRITY_MISMATCH = "checksum mismatch"
INTEGRITY_MISSING = "missing file"
INTEGRITY_UNSIGNED = "unsigned"
INTEGRITY_BAD_SIGNATURE = "signature invalid"
# What save() names a version: its UTC time to the microsecond, then six random hex digits.
VERSION_PATTERN = re.compile(r"\d{8}T\d{12}Z-[0-9a-f]{6}")


@dataclass(frozen=True)
class LoadedModel:
    """A verified model in memory: the fitted pipeline and its manifest."""

    version: str
    manifest: dict
    pipeline: Pipeline
    schema: FeatureSchema
    engine: Engine

    @property
    def serving_path(self) -> str:
        return self.engine.path

    @property
    def task(self) -> str:
        return self.manifest["task"]

    @property
    def policy(self) -> str:
        return self.manifest["out_of_range_policy"]

    @property
    def classes(self) -> list | None:
        return self.manifest.get("classes")


def library_versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "scikit-learn": sklearn.__version__,
        "joblib": joblib.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "skl2onnx": metadata.version("skl2onnx"),
        "onnxruntime": metadata.version("onnxruntime"),
    }


def _json_params(params: dict) -> dict:
    out = {}
    for key, value in params.items():
        value = to_json_value(value)
        out[key] = value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)
    return out


class ModelStore:
    """Saves, lists, loads and activates model versions in a :class:`Storage`.

    Parameters
    ----------
    storage : Storage
        Where versions live.
    allow_version_mismatch : bool
        Load a model pickled by another scikit-learn version, with a loud warning,
        instead of refusing it. Pickles are only guaranteed within one version.
    cache_dir : Path or None
        A local directory keeping each loaded model file by version, so a host downloads a
        version once. Versions are immutable, and a cached file is used only while its
        sha256 matches the manifest in storage; None reads storage every time.
    signing_key : bytes or None
        A key kept outside storage. With one, :meth:`save` signs each manifest (which holds
        the sha256 of every model file) and :meth:`load` refuses a version whose manifest is
        unsigned or signed with another key, so whoever can write storage cannot make the
        service unpickle a file of their own. None: manifests are neither signed nor checked,
        and the sha256 proves only that files were not damaged.
    """

    def __init__(
        self,
        storage: Storage,
        *,
        allow_version_mismatch: bool = False,
        cache_dir: Path | None = None,
        signing_key: bytes | None = None,
    ):
        self.storage = storage
        self.allow_version_mismatch = allow_version_mismatch
        self.cache = LocalStorage(cache_dir) if cache_dir is not None else None
        self.signing_key = signing_key or None

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelStore:
        """The store ``settings`` name; models from object storage are cached on this host."""
        return cls(
            open_storage(settings),
            allow_version_mismatch=settings.allow_version_mismatch,
            # On local storage the model file is already on this disk: a cache would only copy it.
            cache_dir=settings.model_cache_dir if settings.store_url else None,
            signing_key=settings.signing_key.get_secret_value().encode() if settings.signing_key else None,
        )

    def save(self, trained: TrainedModel, data_info: dict) -> str:
        """Write a new immutable version; return its id. Does not activate it."""
        buffer = io.BytesIO()
        joblib.dump(trained.pipeline, buffer)
        model_bytes = buffer.getvalue()
        model_sha = hashlib.sha256(model_bytes).hexdigest()
        serving = dict(trained.serving.info)
        onnx_bytes = trained.serving.onnx_bytes
        if onnx_bytes is not None:
            serving["onnx_file"] = _file_record(ONNX_FILE, onnx_bytes)
        created = datetime.now(UTC)
        # Microseconds keep names in save order (versions() sorts by name) for saves within one
        # second; the random suffix keeps two processes saving at the same instant apart.
        version = f"{created:%Y%m%dT%H%M%S%fZ}-{secrets.token_hex(3)}"
        manifest = {
            "version": version,
            "created_at": created.isoformat(),
            "task": trained.task,
            "target": trained.options.target,
            "classes": classes_of(trained),
            "feature_schema": trained.schema.to_dict(),
            "out_of_range_policy": trained.options.out_of_range_policy,
            "estimator": {
                "name": trained.estimator_name,
                "class": f"{type(trained.pipeline[-1]).__module__}.{type(trained.pipeline[-1]).__name__}",
                "params": _json_params(trained.pipeline[-1].get_params()),
            },
            "metrics": {"holdout": trained.metrics, "comparison_metric": COMPARISON_METRIC[trained.task]},
            "diagnostics": trained.diagnostics,
            "model_file": {"name": MODEL_FILE, "sha256": model_sha, "bytes": len(model_bytes)},
            "serving": serving,
            "training_data": {
                **data_info,
                "rows_used_for_training": trained.training_rows,
                "holdout_rows": len(trained.holdout_target),
                "rows_dropped_without_target": trained.dropped_rows,
                "holdout_fraction": trained.options.holdout_fraction,
                "seed": trained.options.seed,
            },
            "library_versions": library_versions(),
        }
        prefix = f"{MODELS_PREFIX}/{version}"
        self.storage.write_bytes(f"{prefix}/{MODEL_FILE}", model_bytes, overwrite=False)
        if onnx_bytes is not None:
            self.storage.write_bytes(f"{prefix}/{ONNX_FILE}", onnx_bytes, overwrite=False)
        manifest_bytes = _dumps(manifest)
        if self.signing_key is not None:
            self.storage.write_bytes(f"{prefix}/{SIGNATURE_FILE}", self._sign(manifest_bytes).encode(), overwrite=False)
        # The manifest goes last: a version without one is incomplete and never listed.
        self.storage.write_bytes(f"{prefix}/{MANIFEST_FILE}", manifest_bytes, overwrite=False)
        return version

    def _sign(self, manifest_bytes: bytes) -> str:
        assert self.signing_key is not None
        return hmac.new(self.signing_key, manifest_bytes, hashlib.sha256).hexdigest()

    def _signature_state(self, version: str, manifest_bytes: bytes) -> str:
        """``ok``, ``unsigned`` or ``signature invalid``; always ``ok`` when no key is configured."""
        if self.signing_key is None:
            return INTEGRITY_OK
        try:
            given = self.storage.read_bytes(f"{MODELS_PREFIX}/{version}/{SIGNATURE_FILE}").strip()
        except FileNotFoundError:
            return INTEGRITY_UNSIGNED
        if not hmac.compare_digest(given, self._sign(manifest_bytes).encode()):
            return INTEGRITY_BAD_SIGNATURE
        return INTEGRITY_OK

    def _verified_manifest(self, version: str) -> dict:
        """The manifest, once its signature is checked (when a key is configured)."""
        manifest_bytes = self._manifest_bytes(version)
        state = self._signature_state(version, manifest_bytes)
        if state == INTEGRITY_UNSIGNED:
            raise ModelIntegrityError(
                f"Model {version} is unsigned and a signing key is configured (PREDICTQ_SIGNING_KEY); "
                "refusing to load it: train it again with the key set"
            )
        if state == INTEGRITY_BAD_SIGNATURE:
            raise ModelIntegrityError(
                f"Model {version} fails its signature: its manifest was changed after training or signed "
                "with another key (PREDICTQ_SIGNING_KEY); refusing to load it"
            )
        return json.loads(manifest_bytes)

    def versions(self) -> list[str]:
        """Complete versions, oldest first."""
        return [
            name
            for name in self.storage.list_dirs(MODELS_PREFIX)
            if self.storage.exists(f"{MODELS_PREFIX}/{name}/{MANIFEST_FILE}")
        ]

    def manifest(self, version: str) -> dict:
        """The stored manifest as it is, signed or not (for listing and inspection; ``load`` verifies)."""
        return json.loads(self._manifest_bytes(version))

    def _manifest_bytes(self, version: str) -> bytes:
        # Checked before the name reaches a path: a NUL byte, a separator or a 4,000-character
        # name is simply not a version (404), never an error of the file system (500).
        if not isinstance(version, str) or not VERSION_PATTERN.fullmatch(version):
            raise ModelNotFound(f"No model version {str(version)[:80]!r}")
        key = f"{MODELS_PREFIX}/{version}/{MANIFEST_FILE}"
        if not self.storage.exists(key):
            raise ModelNotFound(f"No model version {version!r}")
        return self.storage.read_bytes(key)

    def active_version(self) -> str | None:
        if not self.storage.exists(ACTIVE_KEY):
            return None
        return json.loads(self.storage.read_bytes(ACTIVE_KEY))["version"]

    def activate(self, version: str) -> None:
        """Point "active" at ``version`` in one atomic write."""
        self.manifest(version)  # refuses unknown versions
        pointer = {"version": version, "activated_at": datetime.now(UTC).isoformat()}
        self.storage.write_bytes(ACTIVE_KEY, _dumps(pointer))

    def integrity(self, version: str) -> str:
        """``ok``, ``unsigned``, ``signature invalid``, ``missing file`` or ``checksum mismatch``:
        whether the stored files are the ones training wrote, read without unpickling anything.

        The signature states appear only when a signing key is configured.
        """
        manifest_bytes = self._manifest_bytes(version)
        state = self._signature_state(version, manifest_bytes)
        if state != INTEGRITY_OK:
            return state
        manifest = json.loads(manifest_bytes)
        records = [manifest["model_file"]]
        if (manifest.get("serving") or {}).get("onnx_file"):
            records.append(manifest["serving"]["onnx_file"])
        for record in records:
            try:
                data = self.storage.read_bytes(f"{MODELS_PREFIX}/{version}/{record['name']}")
            except FileNotFoundError:
                return INTEGRITY_MISSING
            if hashlib.sha256(data).hexdigest() != record["sha256"]:
                return INTEGRITY_MISMATCH
        return INTEGRITY_OK

    def load(self, version: str) -> LoadedModel:
        """Load and verify one version: signature (with a key), checksum, then library versions."""
        manifest = self._verified_manifest(version)
        expected = manifest["model_file"]["sha256"]
        data = self._cached_model(version, expected)
        downloaded = data is None
        if downloaded:
            try:
                data = self.storage.read_bytes(f"{MODELS_PREFIX}/{version}/{MODEL_FILE}")
            except FileNotFoundError as exc:
                raise ModelIntegrityError(f"Model {version} has a manifest but its model file is missing") from exc
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise ModelIntegrityError(
                f"Model {version} fails its checksum (sha256 {actual[:12]}..., manifest says "
                f"{expected[:12]}...): the file was changed or damaged after training; refusing to load it"
            )
        trained_with = manifest["library_versions"]["scikit-learn"]
        if trained_with != sklearn.__version__:
            message = (
                f"Model {version} was trained with scikit-learn {trained_with} but this process has "
                f"{sklearn.__version__}; pickled estimators are only guaranteed within one version"
            )
            if not self.allow_version_mismatch:
                raise ModelIntegrityError(
                    message + ". Retrain it, or set PREDICTQ_ALLOW_VERSION_MISMATCH=true to load it anyway"
                )
            log.warning("LOADING A MODEL FROM ANOTHER SCIKIT-LEARN VERSION: %s", message)
        if downloaded and self.cache is not None:
            self.cache.write_bytes(f"{version}/{MODEL_FILE}", data)
        with warnings.catch_warnings():
            # The mismatch was decided on above; sklearn's own warning would repeat it.
            warnings.simplefilter("ignore", sklearn.exceptions.InconsistentVersionWarning)
            pipeline = joblib.load(io.BytesIO(data))
        serving = manifest.get("serving")  # absent from versions saved before the compiled path
        probabilities = gives_probabilities(manifest["task"], pipeline)
        engine = engine_for(pipeline, probabilities, serving, self._onnx_bytes(version, serving))
        return LoadedModel(version, manifest, pipeline, FeatureSchema.from_dict(manifest["feature_schema"]), engine)

    def _onnx_bytes(self, version: str, serving: dict | None) -> bytes | None:
        """The version's ONNX file, checked against its manifest; None when it has none."""
        record = (serving or {}).get("onnx_file")
        if record is None:
            return None
        try:
            data = self.storage.read_bytes(f"{MODELS_PREFIX}/{version}/{record['name']}")
        except FileNotFoundError as exc:
            raise ModelIntegrityError(f"Model {version} has a manifest but its ONNX file is missing") from exc
        if hashlib.sha256(data).hexdigest() != record["sha256"]:
            raise ModelIntegrityError(
                f"Model {version} fails its checksum: the ONNX file was changed or damaged after training; "
                "refusing to load it"
            )
        return data

    def _cached_model(self, version: str, sha256: str) -> bytes | None:
        """This host's copy of the version's model file, if it has one matching ``sha256``."""
        key = f"{version}/{MODEL_FILE}"
        if self.cache is None or not self.cache.exists(key):
            return None
        data = self.cache.read_bytes(key)
        if hashlib.sha256(data).hexdigest() != sha256:
            log.warning("cached model file of %s fails its checksum; downloading it again", version)
            return None
        return data

    def load_active(self) -> LoadedModel:
        version = self.active_version()
        if version is None:
            raise NoActiveModel("No model has been trained and activated yet; run `predictq train`")
        return self.load(version)


def _file_record(name: str, data: bytes) -> dict:
    return {"name": name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def _dumps(value: Any) -> bytes:
    return json.dumps(value, indent=2, sort_keys=False).encode()
