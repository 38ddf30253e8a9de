"""What a provider id or string may be, wherever it enters: one rule for every door.

The ledger stores ids and strings in PostgreSQL `text` columns, which refuse NUL, and a
control character in an id is never a provider's intent: a string with a control
character (U+0000-U+001F, U+007F), a lone surrogate (not valid Unicode, cannot be
written as UTF-8), or more characters than its limit is refused. The ingress adapters
(`adapters.jsonbody`), the event schemas (`Id`) and every debit path of the CLI and the
ledger apply this same function, so what one door refuses no other lets in.
"""

import re

TEXT_CHARS_MAX = 256  # ids and strings: longer is refused (the events' `Id` limit too)

_CONTROL = re.compile("[\x00-\x1f\x7f]")
_SURROGATE = re.compile("[\ud800-\udfff]")


class TextError(ValueError):
    """A string the ledger cannot hold; `str()` is safe to log (it never echoes it)."""


def validate_text(
    value: str, what: str = "id", *, chars_min: int = 1, chars_max: int = TEXT_CHARS_MAX
) -> str:
    """Return `value` if it has `chars_min`..`chars_max` characters, no control
    character and no lone surrogate; else raise TextError."""
    if not chars_min <= len(value) <= chars_max:
        raise TextError(f"{what} must have {chars_min} to {chars_max} characters")
    if _CONTROL.search(value):
        raise TextError(f"{what} contains a control character")
    if _SURROGATE.search(value):
        raise TextError(f"{what} is not valid Unicode (lone surrogate)")
    return value
