"""The one normalisation of every text that enters the system: training, validation and test data as read, and the
sentences given to predict."""

from __future__ import annotations

import unicodedata


def normalize_text(text: str) -> str:
    """``text`` without a leading byte-order mark (U+FEFF) or surrounding whitespace, its line breaks as ``\\n`` and
    its characters in Unicode form NFC: a sentence saved on Windows, with a BOM or with decomposed accents gives the
    tokens it gives as plain UTF-8 with LF."""
    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    return unicodedata.normalize("NFC", text).strip()
