"""The Cloud's REST API, seen from the hub (contract section 1).

client   the session, requests with retries, transport errors mapped to hublink's
answers  the answers' pydantic models, and reading them (the Cloud's words, no secrets)
token    the access token's RS256 check on the Cloud's clock, the clock-skew warning
"""

from __future__ import annotations

from hublink.cloud.answers import (
    PublicKey,
    Registration,
    Reply,
    Tokens,
    User,
    describe_answer_error,
    describe_error_body,
    parse_reply,
    raise_for_reply,
)
from hublink.cloud.client import (
    LOGIN_PATH,
    PUBLIC_KEY_PATH,
    REFRESH_PATH,
    REGISTER_PATH,
    USER_AGENT,
    CloudClient,
    make_session,
)
from hublink.cloud.token import describe_clock_skew, public_key_problem, verify_access_token

__all__ = [
    "LOGIN_PATH",
    "PUBLIC_KEY_PATH",
    "REFRESH_PATH",
    "REGISTER_PATH",
    "USER_AGENT",
    "CloudClient",
    "PublicKey",
    "Registration",
    "Reply",
    "Tokens",
    "User",
    "describe_answer_error",
    "describe_clock_skew",
    "describe_error_body",
    "make_session",
    "parse_reply",
    "public_key_problem",
    "raise_for_reply",
    "verify_access_token",
]
