"""Domain exceptions. They say what went wrong; ``api/errors.py`` decides the HTTP status."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class FieldError:
    """One fault in a request: which row (0-based) and which field, and why."""

    message: str
    row: int | None = None
    field: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


class PredictqError(Exception):
    """Base class: a message a user can act on, plus optional per-field faults."""

    title = "Error"

    def __init__(self, detail: str, errors: list[FieldError] | None = None):
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []

    def describe(self, max_errors: int | None = None, separator: str = "\n  ") -> str:
        """The detail followed by its faults, for a log line, a job's error or a terminal."""
        faults = [f"row {e.row}, field {e.field}: {e.message}" for e in self.errors[:max_errors]]
        return separator.join([self.detail, *faults])


class BadRequest(PredictqError):
    """The request is not of the expected shape (not JSON, no ``instances``...)."""

    title = "Bad request"


class InvalidInput(PredictqError):
    """The request has the right shape but rows fail the model's schema."""

    title = "Invalid input"


class PayloadTooLarge(PredictqError):
    title = "Payload too large"


class UnsupportedMediaType(PredictqError):
    """The body is sent as a media type the endpoint does not read (JSON sent as text/plain...)."""

    title = "Unsupported media type"


class ModelNotFound(PredictqError):
    """No such model version, or no model trained yet."""

    title = "Model not found"


class NoActiveModel(PredictqError):
    title = "No model available"


class ModelIntegrityError(PredictqError):
    """A stored model fails its checksum or was written by an incompatible library."""

    title = "Model integrity check failed"


class JobNotFound(PredictqError):
    title = "Job not found"


class JobNotFinished(PredictqError):
    title = "Job not finished"


class Unauthorized(PredictqError):
    title = "Unauthorized"


class Forbidden(PredictqError):
    """A valid token without the scope this endpoint needs."""

    title = "Forbidden"


class TooManyRequests(PredictqError):
    """A client over its rate limit."""

    title = "Too many requests"


class ServiceUnavailable(PredictqError):
    """A dependency (the queue) cannot be reached right now."""

    title = "Service unavailable"


class TrainingError(PredictqError):
    """Training data or options are unusable."""

    title = "Training failed"
