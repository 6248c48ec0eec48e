"""Every failure before a stream starts becomes one JSON error body, built here for handlers and middleware alike:
ours `{"error": {"code", "message", "field"?, "request_id"}}`, or OpenAI's on the OpenAI routes. No tracebacks."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException

from worker.api.hints import explain
from worker.api.openai.params import openai_param
from worker.api.request_id import current as current_request_id
from worker.errors import QueueFull, WorkerError

log = logging.getLogger(__name__)

OPENAI_PATHS = ("/v1/images", "/v1/models", "/v1/files")


def is_openai(path: str) -> bool:
    """True for the routes that answer in OpenAI's shapes."""
    return path.startswith(OPENAI_PATHS)


def error_body(
    status: int, code: str, message: str, field: str | None = None, *, openai: bool = False
) -> dict[str, Any]:
    """The JSON error body. OpenAI's `error` object is kept exactly as OpenAI sends it, so its request id sits
    beside it; ours carries the request id inside."""
    request_id = current_request_id.get()
    if openai:  # OpenAI names its own parameter (the status is OpenAI's too: see `error_response`)
        field = openai_param(field)
        kind = "invalid_request_error" if status < 500 else "server_error"
        body: dict[str, Any] = {"error": {"message": message, "type": kind, "param": field, "code": code}}
        if request_id is not None:
            body["request_id"] = request_id
        return body
    error: dict[str, str] = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    if request_id is not None:
        error["request_id"] = request_id
    return {"error": error}


def error_response(
    status: int, code: str, message: str, field: str | None = None, *, openai: bool = False
) -> JSONResponse:
    """`error_body` as a response; OpenAI answers every invalid value with 400 (its SDKs' `BadRequestError`)."""
    if openai and status == 422:
        status = 400
    return JSONResponse(error_body(status, code, message, field, openai=openai), status_code=status)


def _openai(request: Request) -> bool:
    return is_openai(request.url.path)


async def _worker_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, WorkerError)
    response = error_response(exc.status, exc.code, exc.message, exc.field, openai=_openai(request))
    if isinstance(exc, QueueFull):
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError | ValidationError)
    known = _body_fields(request)
    refusal = explain(exc.errors(), request.headers.get("content-type"), known, openai=_openai(request))
    return error_response(refusal.status, refusal.code, refusal.message, refusal.field, openai=_openai(request))


def _body_fields(request: Request) -> tuple[str, ...]:
    """The field names of the route's JSON body model (for "did you mean"), if it has one."""
    body_field = getattr(request.scope.get("route"), "body_field", None)
    model = getattr(getattr(body_field, "field_info", None), "annotation", None)
    return tuple(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else ()


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    code = codes.get(exc.status_code, "http_error")
    message = str(exc.detail)
    allowed = (exc.headers or {}).get("Allow")
    if exc.status_code == 405 and allowed:
        message = f"{request.method} is not allowed on {request.url.path}; use {' or '.join(allowed.split(', '))}"
    response = error_response(exc.status_code, code, message, openai=_openai(request))
    response.headers.update(exc.headers or {})
    return response


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal", "internal error; see the worker log", openai=_openai(request))


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers on `app`."""
    app.add_exception_handler(WorkerError, _worker_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ValidationError, _validation_error)  # models built by hand (multipart forms)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
