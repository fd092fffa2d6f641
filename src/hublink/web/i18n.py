"""English and Spanish through gettext catalogs compiled by Babel.

The catalogs are ``locale/{en,es}/LC_MESSAGES/hublink.po``, extracted with
``pybabel extract`` (``make catalogs`` runs the whole cycle) and compiled to
``.mo`` by ``make catalogs``, which ``make .venv/.installed`` runs too; a
missing ``.mo`` is compiled in memory from its ``.po``.
"""

from __future__ import annotations

import functools
import gettext
import io
import re
from pathlib import Path

import structlog
from babel.core import negotiate_locale
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

log = structlog.get_logger(__name__)

#: Where the catalogs live.
LOCALE_DIR = Path(__file__).parent / "locale"
#: The gettext domain.
DOMAIN = "hublink"
#: The page's languages, the first being the fallback.
LANGUAGES = ("en", "es")
#: Entries of Accept-Language read at most: the header is the visitor's to make long.
MAX_PREFERENCES = 16
_QUALITY = re.compile(r"^q=([01](?:\.\d{0,3})?)$")


def N_(message: str) -> str:
    """Mark ``message`` for extraction; it is translated where it is shown."""
    return message


@functools.cache
def translations(language: str) -> gettext.NullTranslations:
    """The compiled catalog of ``language``; compiled from its ``.po`` if the ``.mo`` is missing.

    A wheel built without ``make catalogs`` carries only the ``.po`` files; the
    page still speaks Spanish then, at the cost of compiling once at start.
    """
    found = Translations.load(str(LOCALE_DIR), [language], DOMAIN)
    if type(found) is not NullTranslations:
        return found
    po = LOCALE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po"
    if not po.exists():
        return found
    log.info("page catalog not compiled; compiling it in memory", language=language)
    with po.open("rb") as source:
        catalog = read_po(source, locale=language)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return Translations(compiled, domain=DOMAIN)


def choose_language(accept_language: str | None, forced: str | None = None) -> str:
    """The page's language: ``forced`` when it is one we have, else the browser's choice."""
    if forced:
        chosen = negotiate_locale([forced], list(LANGUAGES), sep="-")
        if chosen:
            return chosen
    preferred = _preferences(accept_language or "")
    return negotiate_locale(preferred, list(LANGUAGES), sep="-") or LANGUAGES[0]


def _preferences(header: str) -> list[str]:
    """Accept-Language's tags, best first (RFC 9110 section 12.5.4)."""
    weighted: list[tuple[float, int, str]] = []
    for index, item in enumerate(header.split(",")[:MAX_PREFERENCES]):
        tag, *params = (part.strip() for part in item.split(";"))
        quality = 1.0
        for param in params:
            match = _QUALITY.match(param.lower().replace(" ", ""))
            if match:
                quality = float(match.group(1))
        if tag and tag != "*" and quality > 0:
            weighted.append((-quality, index, tag))
    return [tag for _, _, tag in sorted(weighted)]
