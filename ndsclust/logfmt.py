"""The one ``key=value`` encoder of ndsclust's log lines (docs/style.md section 7).

A line is ``event=<event>`` followed by ``key=value`` fields in the order given::

    event=failover tag=web server=beta from=alpha reason="alpha is dead on every channel"

A value is written as it is when it is non-empty and holds only printable characters
other than space, ``"``, ``=`` and ``\\``; otherwise it is quoted in double quotes with
``\\"``, ``\\\\``, ``\\n``, ``\\r``, ``\\t`` and ``\\uXXXX`` (any other character that is not
printable) escaped, as JSON writes them. So every event is one line, and a quoted value
reads back with ``json.loads``: a reader gets back exactly the value that was written.
"""

from __future__ import annotations

from collections.abc import Mapping

_PLAIN_EXCLUDED = frozenset(' "=\\')
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(c: str) -> str:
    if c in _ESCAPES:
        return _ESCAPES[c]
    if c.isprintable():
        return c
    code = ord(c)
    if code < 0x10000:
        return f"\\u{code:04x}"
    # Outside the basic plane JSON writes a surrogate pair.
    high, low = divmod(code - 0x10000, 0x400)
    return f"\\u{0xD800 + high:04x}\\u{0xDC00 + low:04x}"


def value(raw: object) -> str:
    """One value as it stands after ``key=``: plain when it can be, else quoted."""
    text = str(raw)
    if text and all(c.isprintable() and c not in _PLAIN_EXCLUDED for c in text):
        return text
    return '"' + "".join(_escape(c) for c in text) + '"'


def encode(event: str, fields: Mapping[str, object]) -> str:
    """``event=<event> k=v ...``: one log line, without a newline."""
    return " ".join([f"event={value(event)}", *(f"{k}={value(v)}" for k, v in fields.items())])


def line(event: str, /, **fields: object) -> str:
    """``encode`` with the fields as keyword arguments."""
    return encode(event, fields)
