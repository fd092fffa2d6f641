"""TLS trust: the system's CAs plus ``tls.ca_file``, for the REST client, the link and doctor.

Its own module so that the daemon's link can build a context without
importing the REST client (aiohttp, pyjwt, cryptography): an idle daemon
should carry only what it uses.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

from hublink.errors import ConfigError

if TYPE_CHECKING:
    from hublink.config import Settings


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """Verify against the system's CAs plus ``tls.ca_file``.

    Raises:
        ConfigError: ``tls.ca_file`` is missing or holds no usable certificate.
    """
    context = ssl.create_default_context()
    ca_file = settings.tls.ca_file
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as err:
            raise ConfigError(
                f"tls.ca_file = {str(ca_file)!r} cannot be used: {err}",
                hint="point tls.ca_file at a readable PEM file of CA certificates",
            ) from err
    return context
