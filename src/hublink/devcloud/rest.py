"""Contract section 1 from the Cloud's side: login, refresh, public key, register."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from hublink.devcloud.http import bearer, fail, read_body
from hublink.devcloud.state import STATE_KEY
from hublink.devcloud.store import PortsExhaustedError
from hublink.devcloud.tokens import ALGORITHM, TokenError

WRONG_CREDENTIALS = "No active account found with the given credentials"


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class LoginBody(_Body):
    """``POST /api/auth/login/``."""

    email: str = Field(min_length=1)
    password: str = Field(min_length=1)


class RefreshBody(_Body):
    """``POST /api/auth/refresh/``."""

    refresh: str = Field(min_length=1)


class RegisterBody(_Body):
    """``POST /api/hubs/register/``."""

    name: str = Field(min_length=1, max_length=200)
    address: str = Field(default="", max_length=500)


async def login(request: web.Request) -> web.Response:
    """Trade an owner's email and password for an access and a refresh token."""
    cloud = request.app[STATE_KEY]
    body = await read_body(request, LoginBody)
    user = cloud.users.get(body.email.strip().lower())
    if user is None or user.password != body.password:
        fail(401, WRONG_CREDENTIALS)
    return web.json_response(
        {
            "access": cloud.tokens.issue(user, "access"),
            "refresh": cloud.tokens.issue(user, "refresh"),
            "user": {"id": user.id, "email": user.email},
        }
    )


async def refresh(request: web.Request) -> web.Response:
    """Trade a refresh token for a new pair (rotation, like SimpleJWT's option)."""
    cloud = request.app[STATE_KEY]
    body = await read_body(request, RefreshBody)
    try:
        claims = cloud.tokens.verify(body.refresh, "refresh")
    except TokenError as err:
        fail(401, str(err))
    user = cloud.users.get(str(claims.get("email", "")))
    if user is None:
        fail(401, "User not found")
    return web.json_response(
        {
            "access": cloud.tokens.issue(user, "access"),
            "refresh": cloud.tokens.issue(user, "refresh"),
        }
    )


async def public_key(request: web.Request) -> web.Response:
    """The PEM public key that verifies every access token."""
    cloud = request.app[STATE_KEY]
    return web.json_response({"public_key": cloud.tokens.public_pem, "algorithm": ALGORITHM})


async def register(request: web.Request) -> web.Response:
    """Enroll a hub for the owner of the bearer access token."""
    cloud = request.app[STATE_KEY]
    token = bearer(request)
    try:
        claims = cloud.tokens.verify(token, "access")
    except TokenError as err:
        fail(401, f"Given token not valid for any token type: {err}")
    body = await read_body(request, RegisterBody)
    try:
        created = cloud.create_hub(
            owner_email=str(claims["email"]), name=body.name, address=body.address
        )
    except PortsExhaustedError as err:
        fail(409, f"No tunnel port is left for a new hub ({err}); revoke an unused hub first.")
    return web.json_response(created, status=201)


def add_routes(app: web.Application) -> None:
    """Mount the REST API."""
    app.router.add_post("/api/auth/login/", login)
    app.router.add_post("/api/auth/refresh/", refresh)
    app.router.add_get("/api/auth/public-key/", public_key)
    app.router.add_post("/api/hubs/register/", register)
