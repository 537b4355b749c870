"""Error messages name the limit, the character and its position."""

from __future__ import annotations

import pytest

from ndsclust.errors import EntryInvalid
from ndsclust.ldapstore.entries import MAX_VALUE, parse_app
from ndsclust.model import MAX_COMMAND, check_resource, check_server_name, check_tag, parse_command


def test_a_bad_name_names_the_character_and_its_position() -> None:
    with pytest.raises(ValueError, match=r"character '_' \(U\+005F\) at position 4"):
        check_server_name("web_1")
    with pytest.raises(ValueError, match=r"character ' ' \(U\+0020\) at position 4"):
        check_tag("pay roll")
    with pytest.raises(ValueError, match=r"it is 129 characters long, the limit is 128"):
        check_resource("r" * 129)
    with pytest.raises(ValueError, match=r"the last character '-'"):
        check_server_name("alpha-")


def test_a_command_names_its_limit_and_its_control_character() -> None:
    with pytest.raises(ValueError, match=f"at most {MAX_COMMAND} are allowed"):
        parse_command("/bin/x " + "a" * MAX_COMMAND)
    with pytest.raises(ValueError, match=r"U\+0007 at position 8"):
        parse_command("/bin/x \x07")


def test_a_value_too_long_states_the_limit() -> None:
    attrs = {
        "objectClass": [b"ndsclustApplication"],
        "ndsclustTag": [b"web"],
        "ndsclustType": [b"capable"],
        "ndsclustCommand": [b"/bin/true"],
        "ndsclustPrimaryServer": [b"alpha"],
        "ndsclustUnloadCommand": [b"x" * 100051],
    }
    with pytest.raises(
        EntryInvalid, match=f"100051 characters long, too long: the limit is {MAX_VALUE}"
    ):
        parse_app("ndsclustTag=web,ou=applications,ou=ndsclust,dc=x", attrs)


def test_an_event_about_a_request_names_who_wrote_it() -> None:
    from ndsclust.model import App, AppType, Request, RequestKind, ServerName, Tag
    from ndsclust.sentinel.executor import requester_noted

    alice = "uid=alice,ou=people,dc=example,dc=com"
    app = App(
        Tag("web"),
        AppType.CAPABLE,
        ("/bin/true",),
        ServerName("alpha"),
        (),
        request=Request(RequestKind.MIGRATE, ServerName("beta")),
        requested_by=alice,
    )
    assert (
        requester_noted("migrate to beta", app)
        == f"migrate to beta (request migrate:beta by {alice})"
    )
    assert requester_noted("failover", None) == "failover"
