"""The model store's identity: a random id written once into the store itself.

The API records it on every job it queues and each worker reads it at start, so a worker
that sees another store (another data directory, another bucket, or one deleted and made
again) can tell that a job is not its to serve before it looks for files that are not there.
Imports only the storage interface.
"""

from __future__ import annotations

import contextlib
import re
import secrets

from shared.storage import LocalStorage, ObjectStorage, Storage

# At the store's root: <data_dir>/store-id, or <prefix>/store-id in the bucket.
STORE_ID_KEY = "store-id"
STORE_ID_PATTERN = re.compile(r"[0-9a-f]{32}")


def read_store_id(storage: Storage) -> str | None:
    """The id written in ``storage``; None when it has none yet."""
    try:
        raw = storage.read_bytes(STORE_ID_KEY)
    except FileNotFoundError:
        return None
    value = raw.decode(errors="replace").strip()
    if not STORE_ID_PATTERN.fullmatch(value):
        raise ValueError(f"{STORE_ID_KEY} in {describe_storage(storage)} holds no valid store id: {value[:40]!r}")
    return value


def ensure_store_id(storage: Storage) -> str:
    """The id of ``storage``, written there first when it has none.

    Written once and never replaced: when two processes race to create it, the one stored
    first wins and both return it.
    """
    existing = read_store_id(storage)
    if existing is not None:
        return existing
    with contextlib.suppress(FileExistsError):  # another process wrote it since we looked
        storage.write_bytes(STORE_ID_KEY, f"{secrets.token_hex(16)}\n".encode(), overwrite=False)
    # Read back rather than trusting our own write: on object storage the later of two racing PUTs wins.
    stored = read_store_id(storage)
    if stored is None:
        raise FileNotFoundError(f"{STORE_ID_KEY} was written to {describe_storage(storage)} but cannot be read back")
    return stored


def describe_storage(storage: Storage) -> str:
    """Where ``storage`` is, for messages: a directory or a URL."""
    if isinstance(storage, ObjectStorage):
        return storage.url
    if isinstance(storage, LocalStorage):
        return str(storage.root)
    return repr(storage)


def store_mismatch(job_store_id: str | None, own_store_id: str | None, location: str, worker: str) -> str | None:
    """Why a worker whose store is ``own_store_id`` cannot serve a job queued for ``job_store_id``; None if it can.

    A job recorded before jobs carried a store id (``job_store_id`` None) is served as before.
    """
    if job_store_id is None or job_store_id == own_store_id:
        return None
    seen = f"model store {own_store_id}" if own_store_id else "no model store"
    return (
        f"worker {worker} cannot serve this job: it was queued for model store {job_store_id}, but the worker "
        f"sees {seen} at {location}. API and workers must share one PREDICTQ_DATA_DIR (or PREDICTQ_STORE_URL): "
        "fix or stop that worker, then submit the job again"
    )
