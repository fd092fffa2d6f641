"""The owners' JWTs: RS256 access and refresh tokens, like SimpleJWT issues them."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

ALGORITHM = "RS256"
TokenType = Literal["access", "refresh"]


class TokenError(Exception):
    """A token that is malformed, badly signed, expired, or of the wrong type."""


@dataclass(frozen=True)
class User:
    """An owner account of the reference Cloud."""

    id: int
    email: str
    password: str


def new_signing_key() -> rsa.RSAPrivateKey:
    """A fresh 2048-bit RSA key for RS256."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class TokenIssuer:
    """Signs and checks tokens with an RSA key, by default one made for this issuer."""

    def __init__(
        self, *, access_ttl: float, refresh_ttl: float, key: rsa.RSAPrivateKey | None = None
    ) -> None:
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl
        self._key = key or new_signing_key()
        self.public_pem = (
            self._key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode("ascii")
        )

    def issue(self, user: User, token_type: TokenType) -> str:
        """A signed token of ``token_type`` for ``user``."""
        now = time.time()
        ttl = {"access": self.access_ttl, "refresh": self.refresh_ttl}[token_type]
        claims = {
            "token_type": token_type,
            "user_id": user.id,
            "email": user.email,
            "iat": int(now),
            # Fractional expiry lets tests use TTLs below one second.
            "exp": now + ttl,
            "jti": secrets.token_hex(16),
        }
        return jwt.encode(claims, self._key, algorithm=ALGORITHM)

    def verify(self, token: str, token_type: TokenType) -> dict[str, Any]:
        """The claims of a valid, unexpired token of ``token_type``.

        Raises:
            TokenError: anything else, with a message fit for a 401 body.
        """
        try:
            claims: dict[str, Any] = jwt.decode(
                token, self._key.public_key(), algorithms=[ALGORITHM]
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("Token is expired") from None
        except jwt.InvalidTokenError:
            raise TokenError("Token is invalid") from None
        if claims.get("token_type") != token_type:
            raise TokenError(f"Token has wrong type (expected {token_type})")
        return claims
