"""The one settings object. Nothing else in predictq reads the environment."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

OutOfRangePolicy = Literal["warn", "clip", "reject"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
LogFormat = Literal["json", "text"]
# Placeholders from .env.example: a server must never run with one of these as its token.
EXAMPLE_TOKENS = frozenset({"change-me", "changeme", ""})
# What a client token may be used for; the admin token may do everything.
PREDICT_SCOPE = "predict"
JOBS_SCOPE = "jobs"
CLIENT_SCOPES = (PREDICT_SCOPE, JOBS_SCOPE)
MIN_CLIENT_TOKEN_CHARS = 16
# A key that short could be guessed; secrets.token_urlsafe(32) gives 43 characters.
MIN_SIGNING_KEY_CHARS = 16
# A 2,000-column header of 100-byte names fits; a hostile one (a million columns) is refused
# before a parser spends memory on it. shared.batch.validate_csv uses the same defaults.
DEFAULT_MAX_CSV_HEADER_BYTES = 256 * 1024
DEFAULT_MAX_CSV_COLUMNS = 2_000
# The batch CSV reader's block (shared.batch.CSV_BLOCK_BYTES): no line of a CSV can be longer.
MAX_CSV_LINE_BYTES = 1024 * 1024


class ClientToken(BaseModel):
    """One client token and what it may do: ``predict`` (POST /predict), ``jobs`` (/jobs...)."""

    model_config = ConfigDict(frozen=True)

    token: SecretStr
    scopes: frozenset[Literal["predict", "jobs"]] = frozenset(CLIENT_SCOPES)

    @field_validator("token")
    @classmethod
    def _strong_token(cls, value: SecretStr) -> SecretStr:
        token = value.get_secret_value()
        if token.strip() in EXAMPLE_TOKENS:
            raise ValueError("a client token is still the example value; set a random token")
        if len(token) < MIN_CLIENT_TOKEN_CHARS or not re.fullmatch(r"[!-~]+", token):
            raise ValueError(
                f"client tokens must be at least {MIN_CLIENT_TOKEN_CHARS} printable characters without spaces"
            )
        return value

    @field_validator("scopes")
    @classmethod
    def _some_scope(cls, value: frozenset[str]) -> frozenset[str]:
        if not value:
            raise ValueError(f"a client token needs at least one scope of {', '.join(CLIENT_SCOPES)}")
        return value


def parse_client_tokens(value: object) -> object:
    """``PREDICTQ_CLIENT_TOKENS`` as entries ``token:scope,scope`` separated by spaces or ``;``
    (no scopes: every client scope), or as a JSON list of ``{"token": ..., "scopes": [...]}``."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        return json.loads(text)
    entries = []
    for entry in re.split(r"[\s;]+", text):
        if not entry:
            continue
        token, colon, scopes = entry.rpartition(":") if ":" in entry else (entry, "", "")
        entries.append({"token": token} | ({"scopes": [s for s in scopes.split(",") if s]} if colon else {}))
    return entries


def _cores() -> int:
    """The cores this process may run on (a container's CPU set, not the host's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class Settings(BaseSettings):
    """Typed configuration, read from ``PREDICTQ_*`` environment variables.

    Every field below can be set as ``PREDICTQ_<FIELD_NAME>`` (upper case).
    """

    model_config = SettingsConfigDict(env_prefix="PREDICTQ_", frozen=True, extra="ignore")

    data_dir: Path = Field(Path("var"), description="Models, job files and local Redis data.")
    store_url: str | None = Field(
        None,
        description="Models and job files on object storage (s3://bucket/prefix); unset: under data_dir.",
    )
    s3_endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint (MinIO, moto); unset: AWS S3 for the region."
    )
    s3_region: str | None = Field(None, description="S3 region; unset: the AWS credential chain's default.")
    # Unset: the standard AWS chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, profile, instance role).
    s3_access_key_id: str | None = Field(None, description="S3 access key; unset: the AWS credential chain.")
    s3_secret_access_key: SecretStr | None = Field(None, description="S3 secret key; unset: the AWS credential chain.")
    redis_url: str | None = Field(
        None, description="Broker and job store. Unset: the local runner starts an embedded server."
    )
    broker_url: str | None = Field(
        None, description="Celery broker, when it differs from redis_url (memory:// in unit tests)."
    )
    sync_max_rows: int = Field(1000, ge=1, description="Rows POST /predict answers at once.")
    max_request_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="Largest JSON body accepted (413 beyond).")
    # 1,000 rows of a typical table are ~300 KB: 2 MiB leaves room, and a bigger body is a batch.
    predict_max_bytes: int = Field(
        2 * 1024 * 1024, ge=1024, description="Largest body POST /predict reads (413 beyond, pointing to /jobs)."
    )
    max_upload_bytes: int = Field(2 * 1024 * 1024 * 1024, ge=1024, description="Largest CSV upload for a batch job.")
    max_csv_header_bytes: int = Field(
        DEFAULT_MAX_CSV_HEADER_BYTES,
        ge=1024,
        le=MAX_CSV_LINE_BYTES,
        description="Longest first line (header) of a CSV upload (400 beyond).",
    )
    max_csv_columns: int = Field(
        DEFAULT_MAX_CSV_COLUMNS, ge=1, description="Most columns a CSV upload may have (400 beyond)."
    )
    out_of_range_policy: OutOfRangePolicy = Field(
        "warn", description="Default policy for numeric values outside the training range."
    )
    allow_version_mismatch: bool = Field(
        False, description="Load models pickled by another scikit-learn version (warned loudly)."
    )
    model_check_interval_s: float = Field(
        1.0, ge=0.0, description="How often the API looks for a newly activated model."
    )
    dataset_path: Path = Field(Path("data/penguins.csv"), description="Demo / default dataset.")
    dataset_target: str = Field("species", description="Column to predict in dataset_path.")
    signing_key: SecretStr | None = Field(
        None,
        description="HMAC key signing each model manifest; with it, unsigned or mis-signed versions are "
        "refused. Keep it outside the model store. Unset: manifests are not signed.",
    )
    admin_token: str | None = Field(None, description="Bearer token for retrain and activate.")
    client_tokens: Annotated[tuple[ClientToken, ...], NoDecode] = Field(
        (),
        description="Client tokens, each with its scopes (predict, jobs): 'token:predict,jobs other:predict'. "
        "Any set: /predict, /jobs, /models, /metrics and /openapi.json need a token.",
    )
    predict_rate_limit: str | None = Field(
        None,
        description="Requests one client (token, else address) may send to POST /predict, e.g. '20/second;600/minute'; "
        "counted in each API process, never in Redis. Unset: no limit.",
    )
    jobs_rate_limit: str | None = Field(
        None,
        description="Requests one client may send to /jobs, e.g. '60/minute'; counted in Redis (redis_url), so "
        "shared by every API process. Unset: no limit.",
    )
    require_token_for_predict: bool = Field(
        False, description="Require a token (a client token, else the admin token) even with no client tokens set."
    )
    job_chunk_rows: int = Field(10_000, ge=1, description="Rows per parallel batch chunk.")
    job_retention_s: int = Field(7 * 24 * 3600, ge=60, description="How long jobs are kept.")
    batch_soft_time_limit_s: int = Field(600, ge=1)
    batch_time_limit_s: int = Field(660, ge=1)
    training_soft_time_limit_s: int = Field(3600, ge=1)
    training_time_limit_s: int = Field(3660, ge=1)
    broker_visibility_timeout_s: int = Field(
        4000, ge=1, description="Must exceed the longest hard time limit, or tasks run twice."
    )
    # Long enough that a job waiting for its one slow chunk (at most the hard limit) is not requeued.
    job_stall_after_s: int = Field(
        900, ge=1, description="A queued or running batch job with no progress this long has its lost tasks re-sent."
    )
    job_sweep_interval_s: int = Field(60, ge=1, description="How often one worker looks for stalled jobs.")
    retrain_lock_ttl_s: int = Field(
        60,
        ge=2,
        description="Training lock lifetime, renewed while a retrain runs: it lapses this long after its worker dies.",
    )
    job_max_deliveries: int = Field(
        3,
        ge=1,
        description="Times a job step may start without finishing (its worker process died) before the job fails.",
    )
    log_level: LogLevel = Field("INFO", description="Least severe log records written (API and workers).")
    log_format: LogFormat = Field("json", description="json: one object per line; text: for a person at a terminal.")
    prometheus_multiproc_dir: Path | None = Field(
        None,
        # prometheus-client's own variable, unprefixed: the library reads it when imported, so
        # setting and library cannot disagree. `predictq serve` sets it for its gunicorn workers.
        validation_alias="prometheus_multiproc_dir",
        description="Directory where each API worker process writes its metrics, summed by /metrics.",
    )
    # Kept so existing environments still parse; nothing reads it.
    local_redis_port: int = Field(
        6390,
        ge=1,
        le=65535,
        description="Deprecated and ignored: the embedded local Redis listens on a Unix socket in data_dir/redis.",
    )
    proxy_hops: int = Field(
        0,
        ge=0,
        le=10,
        description="Reverse proxies in front of the API whose X-Forwarded-For/-Proto/-Host/-Port/-Prefix "
        "headers are trusted (0: none, the headers are ignored).",
    )
    host: str = Field("127.0.0.1", description="Address the API binds to.")
    port: int = Field(8000, ge=1, le=65535)
    api_workers: int = Field(
        default_factory=_cores, ge=1, description="gunicorn worker processes [default: one per core]."
    )
    api_threads: int = Field(
        2,
        ge=1,
        le=64,
        description="Threads per gunicorn worker. Connections are kept alive either way; one thread "
        "more than one keeps a slow client from holding a whole process.",
    )
    worker_concurrency: int = Field(
        default_factory=_cores, ge=1, description="Celery worker processes [default: one per core]."
    )

    @field_validator("data_dir")
    @classmethod
    def _absolute_data_dir(cls, value: Path) -> Path:
        # API, workers and send_file must agree on one location whatever their cwd.
        return value.expanduser().absolute()

    @field_validator(
        "store_url",
        "s3_endpoint_url",
        "s3_region",
        "s3_access_key_id",
        "s3_secret_access_key",
        "signing_key",
        "predict_rate_limit",
        "jobs_rate_limit",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        # docker-compose passes an unset variable through as "" (see docker-compose.yml).
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("store_url")
    @classmethod
    def _store_url_with_scheme(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if "://" not in value:
            raise ValueError("PREDICTQ_STORE_URL must be a URL such as s3://bucket/prefix")
        return value.strip().rstrip("/")

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_case_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("admin_token")
    @classmethod
    def _no_example_token(cls, value: str | None) -> str | None:
        if value is not None and value.strip() in EXAMPLE_TOKENS:
            raise ValueError("PREDICTQ_ADMIN_TOKEN is still the example value; set a random token")
        return value

    @field_validator("predict_rate_limit", "jobs_rate_limit")
    @classmethod
    def _parseable_rate_limit(cls, value: str | None) -> str | None:
        if value is not None:
            from limits import parse_many

            try:
                parse_many(value)
            except ValueError as exc:
                raise ValueError(f"{value!r} is not a rate limit such as '20/second;600/minute'") from exc
        return value

    @field_validator("client_tokens", mode="before")
    @classmethod
    def _parse_client_tokens(cls, value: object) -> object:
        return parse_client_tokens(value)

    @field_validator("signing_key")
    @classmethod
    def _strong_signing_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            key = value.get_secret_value().strip()
            if key in EXAMPLE_TOKENS:
                raise ValueError("PREDICTQ_SIGNING_KEY is still the example value; set a random key")
            if len(key) < MIN_SIGNING_KEY_CHARS:
                raise ValueError(f"PREDICTQ_SIGNING_KEY must be at least {MIN_SIGNING_KEY_CHARS} characters")
        return value

    @model_validator(mode="after")
    def _client_tokens_are_distinct(self) -> Settings:
        tokens = [entry.token.get_secret_value() for entry in self.client_tokens]
        if len(set(tokens)) != len(tokens):
            raise ValueError("PREDICTQ_CLIENT_TOKENS lists one token twice")
        if self.admin_token is not None and self.admin_token in tokens:
            raise ValueError("a client token must not be the admin token (PREDICTQ_ADMIN_TOKEN)")
        return self

    @property
    def client_auth_required(self) -> bool:
        """Whether prediction, jobs and the read endpoints need a token."""
        return self.require_token_for_predict or bool(self.client_tokens)

    @model_validator(mode="after")
    def _stall_outlasts_batch_tasks(self) -> Settings:
        # A chunk still being scored must not look lost: the sweeper would queue it a second time.
        if self.job_stall_after_s <= self.batch_time_limit_s:
            raise ValueError(
                f"PREDICTQ_JOB_STALL_AFTER_S ({self.job_stall_after_s}) must exceed "
                f"PREDICTQ_BATCH_TIME_LIMIT_S ({self.batch_time_limit_s})"
            )
        return self

    @model_validator(mode="after")
    def _time_limits_are_ordered(self) -> Settings:
        # The soft limit must come first so the task can fail its job cleanly; the broker must
        # not hand an unacknowledged task to another worker while it may still be running.
        pairs = [
            ("BATCH", self.batch_soft_time_limit_s, self.batch_time_limit_s),
            ("TRAINING", self.training_soft_time_limit_s, self.training_time_limit_s),
        ]
        for name, soft, hard in pairs:
            if soft >= hard:
                raise ValueError(
                    f"PREDICTQ_{name}_SOFT_TIME_LIMIT_S ({soft}) must be below PREDICTQ_{name}_TIME_LIMIT_S ({hard})"
                )
        longest = max(self.batch_time_limit_s, self.training_time_limit_s)
        if self.broker_visibility_timeout_s <= longest:
            raise ValueError(
                f"PREDICTQ_BROKER_VISIBILITY_TIMEOUT_S ({self.broker_visibility_timeout_s}) must exceed "
                f"the longest hard time limit ({longest})"
            )
        return self

    def resolved_admin_token(self) -> str | None:
        """PREDICTQ_ADMIN_TOKEN, else the token the local runner stored under the data dir."""
        if self.admin_token:
            return self.admin_token
        try:
            return self.token_file.read_text().strip() or None
        except OSError:  # no file, or not ours to read
            return None

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def traffic_dir(self) -> Path:
        return self.data_dir / "traffic"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    @property
    def model_cache_dir(self) -> Path:
        """This host's copies of model files downloaded from object storage, by version."""
        return self.data_dir / "cache" / "models"

    @property
    def token_file(self) -> Path:
        return self.data_dir / "admin_token"


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment, with explicit overrides taking precedence."""
    return Settings(**overrides)
