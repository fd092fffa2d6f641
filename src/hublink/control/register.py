"""``POST /v1/register`` (contract section 8): reading its body, and answering a refusal.

The registration itself is :func:`hublink.enroll.enroll`, the same one
``hublink register`` and the page run (through the daemon); this module only
checks the body's shape and words the outcome. The password is used once and
forgotten: it is never logged, stored or sent back, not even inside an error
from the Cloud that happens to quote it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

from hublink.errors import (
    AlreadyRegisteredError,
    CloudAuthError,
    CloudError,
    ConfigError,
    CredentialsError,
    HublinkError,
    InvalidFields,
    UsageError,
)
from hublink.logs import mask_text

#: What a body that is not a JSON object is told.
BODY_SHAPE = (
    'the body must be a JSON object {"email", "password", "name", "address", "force"} '
    '("name", "address" and "force" may be left out)'
)
#: Shown for each answer whose error carries no hint of its own.
HINTS = {
    401: "check the owner's email and password (the Cloud account that owns this shop)",
    409: 'send "force": true to enroll this hub again (the Cloud keeps the old hub)',
    422: "fix the fields named in problems",
    502: "check this box's internet connection and cloud_url, then try again",
    500: "see the daemon's log (journalctl -u hublink) and hublink doctor",
}
_REDACTED = "***"


@dataclass(frozen=True)
class RegisterRequest:
    """One registration asked for; ``None`` name or address means the configured default."""

    email: str
    password: SecretStr
    name: str | None = None
    address: str | None = None
    force: bool = False


def read_register_body(body: Any) -> RegisterRequest:
    """The registration a decoded JSON body asks for. Unknown keys are ignored.

    Raises:
        InvalidFields: the body is not an object, or a field has the wrong type;
            ``problems`` names each (``"email: required, a string"``).
    """
    if not isinstance(body, dict):
        raise InvalidFields(BODY_SHAPE, problems=["(body): expected a JSON object"])
    problems = []
    for field in ("email", "password"):
        if not isinstance(body.get(field), str):
            problems.append(f"{field}: required, a string")
    for field in ("name", "address"):
        if body.get(field) is not None and not isinstance(body[field], str):
            problems.append(f"{field}: a string, or left out for the configured default")
    if body.get("force") is not None and not isinstance(body["force"], bool):
        problems.append("force: true or false")
    if problems:
        raise InvalidFields(
            "the registration has bad fields: " + "; ".join(problems), problems=problems
        )
    return RegisterRequest(
        email=body["email"].strip(),
        password=SecretStr(body["password"]),
        name=body.get("name"),
        address=body.get("address"),
        force=body.get("force") is True,
    )


def refusal_status(err: HublinkError) -> int:
    """The HTTP status of a failed registration (contract section 8)."""
    if isinstance(err, CloudAuthError):
        return 401  # wrong email or password (or the owner's session ended)
    if isinstance(err, AlreadyRegisteredError | CredentialsError):
        # Credentials on disk stand in the way: valid ones without force, or a
        # file that cannot be read (never replaced silently) or written.
        return 409
    if isinstance(err, UsageError | ConfigError):
        return 422
    if isinstance(err, CloudError):
        return 502  # the Cloud failed, refused, or could not be reached
    return 500


def refusal(err: HublinkError, password: SecretStr | None) -> tuple[int, dict[str, Any]]:
    """``(status, {"error", "hint"[, "problems"]})`` for a failed registration."""
    status = refusal_status(err)
    body: dict[str, Any] = {
        "error": scrub(err.message, password),
        "hint": scrub(err.hint, password) if err.hint else HINTS[status],
    }
    if isinstance(err, InvalidFields):
        body["problems"] = [scrub(problem, password) for problem in err.problems]
    return status, body


def scrub(text: str, password: SecretStr | None) -> str:
    """``text`` without the password (a Cloud may quote what it was sent) or any known secret."""
    secret = password.get_secret_value() if password is not None else ""
    if secret:
        text = text.replace(secret, _REDACTED)
    return mask_text(text)
