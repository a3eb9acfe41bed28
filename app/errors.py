"""One error shape for the whole API: {"error": {"code", "message", "details"}}.

Clients and scripts branch on `code`; people read `message`; `details` carries the
structured specifics (which file, which field)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException


class ApiError(Exception):
    """An expected failure the client can act on."""

    def __init__(
        self, status: int, code: str, message: str, details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}
        self.headers = headers


def not_found(kind: str, ident: object) -> ApiError:
    return ApiError(404, "not_found", f"{kind} {ident} does not exist", {"kind": kind, "id": ident})


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict:
    return {"error": {"code": code, "message": message, "details": details or {}}}


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        headers = exc.headers
        if headers is None and exc.status == 401:
            headers = {"WWW-Authenticate": "Bearer"}
        return JSONResponse(
            error_body(exc.code, exc.message, exc.details), exc.status, headers=headers
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "http_error")
        return JSONResponse(
            error_body(code, str(exc.detail)), exc.status_code, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {
                "location": [str(p) for p in err.get("loc", ())],
                # pydantic prefixes our own validators' messages with "Value error, "
                "message": err.get("msg", "").removeprefix("Value error, "),
                "type": err.get("type", ""),
            }
            for err in exc.errors()
        ]
        summary = "; ".join(
            f"{'.'.join(p['location'])}: {p['message']}" for p in problems[:5]
        )
        return JSONResponse(
            error_body("validation_error", f"invalid request: {summary}", {"problems": problems}),
            422,
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:  # pragma: no cover
        return JSONResponse(
            error_body("internal_error", f"internal error (a bug): {type(exc).__name__}"), 500
        )
