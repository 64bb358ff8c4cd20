"""The server's error model (docs/serving.md): every error is ``{"error": {"message", "type", "param", "code"}}``.

400 for anything wrong with the request (malformed JSON, wrong types, bad values, unsupported options,
engine ``SpecExitError``), 404 for an unknown model or route, 503 when the queue is full or the server
shuts down, 500 for a bug.  This module maps every failure to that shape: :class:`APIError` raised by
the handlers, pydantic validation errors, engine errors, starlette's HTTP errors and anything else.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import SpecExitError

log = logging.getLogger("specexit.serve")

# pydantic names union members in error locations ("stop.str", "content.list[TextPart]"): drop those tags
_UNION_TAGS = {"str", "int", "float", "bool", "list[str]", "list[int]", "list[TextPart]", "function-after"}


class APIError(Exception):
    """An OpenAI-style error response."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


def validation_error(e: ValidationError) -> APIError:
    """The first pydantic error as a 400 naming the offending field."""
    err = e.errors(include_url=False)[0]
    if err["type"] == "json_invalid":
        return APIError(400, f"the request body is not valid JSON: {err['msg']}", code="invalid_json")
    loc = ".".join(str(p) for p in err["loc"] if not (isinstance(p, str) and p in _UNION_TAGS))
    if err["type"] == "extra_forbidden":
        return APIError(400, f"unknown field '{loc}'", param=loc, code="unknown_field")
    if err["type"] in ("model_type", "dict_type") and not loc:
        return APIError(400, "the request body must be a JSON object", code="invalid_type")
    return APIError(400, f"invalid value for '{loc}': {err['msg']}", param=loc or None, code="invalid_type")


def as_api_error(e: BaseException) -> APIError:
    """Any failure of a request as its API error: the engine's own checks are the client's fault."""
    if isinstance(e, APIError):
        return e
    if isinstance(e, SpecExitError):
        return APIError(400, str(e), code="invalid_value")
    return APIError(500, f"internal error: {type(e).__name__}", type="server_error", code="internal_error")


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error of ``app`` in the error model (FastAPI's own shape is ``{"detail": ...}``)."""

    @app.exception_handler(APIError)
    async def _api_error(_request: Request, e: APIError) -> JSONResponse:
        return e.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, e: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code)
        return APIError(e.status_code, str(e.detail), code=code).response()

    @app.exception_handler(Exception)
    async def _bug(_request: Request, e: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=e)
        return as_api_error(e).response()
