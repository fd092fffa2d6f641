"""The Cloud's access token and clock (contract section 1), seen from the hub.

    verify_access_token(token, key, now=…)   RS256 signature and expiry, on the Cloud's clock
    public_key_problem(key)                  why a public key is unusable, or None
    describe_clock_skew(skew)                a warning when the clocks are too far apart

pyjwt and cryptography (about 8 MiB) are imported inside the functions that
need them: only enrollment and doctor verify tokens, while the daemon imports
this package for its backup uploads (``tests/test_imports.py`` guards it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import SecretStr

from hublink.clock import MAX_CLOCK_SKEW, describe_skew, skew_is_too_large
from hublink.cloud.answers import PublicKey
from hublink.errors import CloudResponseError

#: The one signature algorithm the Cloud uses for its tokens.
ALGORITHM = "RS256"


def verify_access_token(
    token: SecretStr, key: PublicKey, *, now: float, leeway: float = MAX_CLOCK_SKEW
) -> dict[str, Any]:
    """Check the token's RS256 signature and its expiry at ``now`` (the Cloud's clock if known).

    pyjwt would judge expiry by the local clock, which on a box without a
    real-time clock may be years off; so the time claims are checked here.

    Raises:
        CloudResponseError: wrong algorithm, unusable key, bad signature, or
            a token already expired (or not yet valid) at ``now``.
    """
    if key.algorithm.upper() != ALGORITHM:
        raise CloudResponseError(
            f"the Cloud signs its tokens with {key.algorithm}; hublink expects RS256",
            hint="check cloud_url: this does not look like the Cloud hublink knows",
        )
    # pyjwt pulls in cryptography (~8 MiB): only enrollment needs it, not the daemon.
    import jwt

    hint = "check cloud_url: a proxy or another server may be answering in the Cloud's place"
    try:
        claims: dict[str, Any] = jwt.decode(
            token.get_secret_value(),
            key.public_key,
            algorithms=["RS256"],
            options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
        )
    except jwt.InvalidSignatureError:
        raise CloudResponseError(
            "the Cloud's access token does not match its public key", hint=hint
        ) from None
    except (jwt.InvalidKeyError, ValueError, TypeError) as err:
        # pyjwt raises plain ValueError for a PEM that cryptography cannot read.
        raise CloudResponseError(
            f"the Cloud's public key is not a usable RSA key ({type(err).__name__})", hint=hint
        ) from None
    except jwt.PyJWTError as err:
        raise CloudResponseError(
            f"the Cloud's access token is not a valid RS256 JWT ({err})", hint=hint
        ) from None
    _check_time_claims(claims, now=now, leeway=leeway)
    return claims


def _check_time_claims(claims: Mapping[str, Any], *, now: float, leeway: float) -> None:
    hint = "check this machine's clock and the Cloud's; tokens are judged by the Cloud's clock"
    exp = claims.get("exp")
    if isinstance(exp, int | float) and exp + leeway < now:
        raise CloudResponseError(
            f"the Cloud's access token had already expired when it arrived ({now - exp:.0f} s ago)",
            hint=hint,
        )
    for claim in ("nbf", "iat"):
        value = claims.get(claim)
        if isinstance(value, int | float) and value - leeway > now:
            raise CloudResponseError(
                f"the Cloud's access token is not valid yet ({claim} is {value - now:.0f} s ahead)",
                hint=hint,
            )


def public_key_problem(key: PublicKey) -> str | None:
    """Why ``key`` cannot verify the Cloud's tokens (algorithm, PEM, not RSA), or None."""
    if key.algorithm.upper() != ALGORITHM:
        return f"the Cloud signs with {key.algorithm}, hublink expects {ALGORITHM}"
    # cryptography (~8 MiB) only for doctor and enrollment, not for the daemon's uploads.
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        loaded = load_pem_public_key(key.public_key.encode())
    except ValueError:
        return "the public key is not a readable PEM key"
    if not isinstance(loaded, RSAPublicKey):
        return "the public key is not an RSA key"
    return None


def describe_clock_skew(skew: float | None) -> str | None:
    """A plain warning when this machine's clock is more than MAX_CLOCK_SKEW seconds off."""
    if skew is None or not skew_is_too_large(skew):
        return None
    return (
        f"{describe_skew(skew)}; "
        "TLS certificates and login tokens depend on the right time. Turn on time "
        "synchronisation (e.g. `timedatectl set-ntp true`) or set the clock"
    )
