"""The one key=value encoder of the log lines (docs/style.md section 7)."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from ndsclust import logfmt


def parse(text: str) -> dict[str, str]:
    """A reader of ``logfmt`` lines: plain values up to a space, quoted ones as JSON."""
    fields: dict[str, str] = {}
    decoder = json.JSONDecoder()
    i = 0
    while i < len(text):
        eq = text.index("=", i)
        key = text[i:eq]
        assert key and " " not in key, text
        if text[eq + 1 : eq + 2] == '"':
            got, end = decoder.raw_decode(text, eq + 1)
        else:
            end = text.find(" ", eq + 1)
            end = len(text) if end < 0 else end
            got = text[eq + 1 : end]
        assert end == len(text) or text[end] == " ", text
        fields[key] = got
        i = end + 1
    return fields


def test_plain_values_stand_as_they_are() -> None:
    line = logfmt.line("failover", tag="web", server="beta", **{"from": "alpha"}, n=3)
    assert line == "event=failover tag=web server=beta from=alpha n=3"


def test_values_with_spaces_are_quoted() -> None:
    assert logfmt.line("unload", reason="failback to alpha") == (
        'event=unload reason="failback to alpha"'
    )


def test_an_empty_value_is_two_quotes() -> None:
    assert logfmt.line("x", text="") == 'event=x text=""'


def test_quotes_equals_and_backslashes_are_quoted_and_escaped() -> None:
    assert logfmt.value('say "hi"') == '"say \\"hi\\""'
    assert logfmt.value("a=b") == '"a=b"'
    assert logfmt.value("c:\\x") == '"c:\\\\x"'


def test_newlines_and_control_characters_never_break_the_line() -> None:
    line = logfmt.line("output", text="one\ntwo\r\tthree\x00\x7f")
    assert "\n" not in line and "\r" not in line
    assert line == 'event=output text="one\\ntwo\\r\\tthree\\u0000\\u007f"'


def test_non_ascii_printable_text_stays_readable() -> None:
    assert logfmt.value("café") == "café"
    assert logfmt.value("no\u00a0break") == '"no\\u00a0break"'


def test_the_fields_keep_their_order() -> None:
    assert logfmt.encode("e", {"b": 1, "a": 2}) == "event=e b=1 a=2"


@given(
    st.dictionaries(
        st.from_regex(r"[a-z_]{1,12}", fullmatch=True).filter(lambda k: k != "event"),
        st.text(),
        max_size=6,
    )
)
def test_a_reader_gets_back_exactly_what_was_written(fields: dict[str, str]) -> None:
    line = logfmt.encode("ev", fields)
    assert "\n" not in line
    assert parse(line) == {"event": "ev", **fields}
