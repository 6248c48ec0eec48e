"""One exception tree for the whole worker: each class carries an HTTP status and a machine-readable code.

The engine and the pipelines raise these; `worker.api.errors` turns them into JSON bodies or SSE `error`
events. Nothing here imports fastapi or torch.
"""

from __future__ import annotations


class WorkerError(Exception):
    """Base class: `status` is the HTTP status, `code` the machine-readable error code."""

    status: int = 500
    code: str = "internal"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidRequest(WorkerError):
    """The request is well-formed JSON but a value is not allowed."""

    status = 422
    code = "invalid_request"


class Unsupported(WorkerError):
    """The request asks for a feature this worker does not have (an A1111 hires fix, another checkpoint)."""

    status = 400
    code = "unsupported"


class NotServed(WorkerError):
    """The route needs a component this worker was started without (`--components`)."""

    status = 400
    code = "invalid_request"


class BadRequest(WorkerError):
    """The request cannot be parsed at all (broken JSON, broken base64, undecodable image)."""

    status = 400
    code = "invalid_request"


class UnsupportedMediaType(WorkerError):
    """An uploaded image is not PNG, JPEG or WebP."""

    status = 415
    code = "unsupported_media_type"


class PayloadTooLarge(WorkerError):
    """The body or an uploaded image exceeds a configured limit."""

    status = 413
    code = "payload_too_large"


class Unauthorized(WorkerError):
    """A route needs the API key and the request did not present it."""

    status = 401
    code = "unauthorized"


class NotFound(WorkerError):
    """No such job (or it has expired from the result store)."""

    status = 404
    code = "not_found"


class ModelNotFound(NotFound):
    """A request named a model this worker does not serve."""

    code = "model_not_found"


class QueueFull(WorkerError):
    """The bounded queue is full; the client should retry after `retry_after` seconds."""

    status = 429
    code = "queue_full"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotReady(WorkerError):
    """The model is still loading, or the worker is draining."""

    status = 503
    code = "not_ready"


class JobCancelled(WorkerError):
    """The job was cancelled (DELETE, or its client went away)."""

    status = 409
    code = "cancelled"


class JobTimeout(WorkerError):
    """The job ran past its time limit and was stopped at a step boundary."""

    status = 504
    code = "timeout"


class OutOfMemory(WorkerError):
    """The device ran out of memory during the job."""

    status = 507
    code = "out_of_memory"


class JobFailed(WorkerError):
    """A job that ended without images, answered to a client that waited for it (status and code from the job)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class ModelError(WorkerError):
    """The pipeline itself failed on this input."""

    status = 500
    code = "model_error"


class ConfigError(WorkerError):
    """The worker's own options do not fit this machine (a startup error, never an HTTP answer)."""

    status = 500
    code = "invalid_config"


class ModelLoadError(WorkerError):
    """The model could not be found or loaded at startup."""

    status = 503
    code = "model_error"
