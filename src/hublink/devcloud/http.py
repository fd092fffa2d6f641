"""Small HTTP helpers shared by the reference Cloud's handlers: JSON bodies and errors."""

from __future__ import annotations

import json
from typing import Any, NoReturn, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

ModelT = TypeVar("ModelT", bound=BaseModel)


def json_error(status: int, detail: str, **headers: str) -> web.HTTPException:
    """An HTTP error with a DRF-style ``{"detail": …}`` JSON body, to raise."""
    exc = web.HTTPException(
        text=json.dumps({"detail": detail}), content_type="application/json", headers=headers
    )
    exc.set_status(status)
    return exc


def fail(status: int, detail: str, **headers: str) -> NoReturn:
    """Raise :func:`json_error`."""
    raise json_error(status, detail, **headers)


async def read_body(request: web.Request, model: type[ModelT]) -> ModelT:
    """The request's JSON body validated by ``model``.

    Raises:
        web.HTTPException: 400 with ``{"field": ["message"]}`` like DRF, or a
            ``detail`` when the body is not a JSON object at all.
    """
    try:
        data: Any = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        fail(400, "JSON parse error: the body is not valid JSON")
    if not isinstance(data, dict):
        fail(400, "Invalid data: expected a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise field_errors(err) from None


def field_errors(err: ValidationError) -> web.HTTPException:
    """A 400 listing each invalid field the way DRF does."""
    errors: dict[str, list[str]] = {}
    for problem in err.errors(include_url=False):
        key = ".".join(str(part) for part in problem["loc"]) or "non_field_errors"
        message = "This field is required." if problem["type"] == "missing" else problem["msg"]
        errors.setdefault(key, []).append(message)
    return web.HTTPBadRequest(text=json.dumps(errors), content_type="application/json")


def bearer(request: web.Request) -> str:
    """The token of an ``Authorization: Bearer …`` header.

    Raises:
        web.HTTPException: 401 when the header is missing or not a bearer token.
    """
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        fail(
            401,
            "Authentication credentials were not provided.",
            **{"WWW-Authenticate": 'Bearer realm="api"'},
        )
    return token.strip()
