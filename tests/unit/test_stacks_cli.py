"""Service stacks as the operator sees them: doctor's checks, the status column, the edit of
a stack attribute, and the pure parts of the address holder."""

from __future__ import annotations

import ipaddress

from ndsclust.cli import app_fields
from ndsclust.cli.app_fields import parse_sets, stack_class, stack_text
from ndsclust.doctor import Level
from ndsclust.doctor.stacks import check_stacks
from ndsclust.model import ServerName, Tag
from ndsclust.sentinel import address, address_holder
from tests.unit.test_stacks import DB, IP, member


def test_doctor_names_a_broken_set_and_passes_a_good_one() -> None:
    good = check_stacks([member(IP), member(DB, ["ip"])])
    assert [f.level for f in good] == [Level.OK] and "ip -> db" in good[0].message
    bad = check_stacks([member(DB, ["nosuch"])])
    assert bad[0].level is Level.PROBLEM and "nosuch" in bad[0].message


def test_doctor_checks_this_servers_addresses_and_arping() -> None:
    svc = member(Tag("svc"), addresses=["198.18.5.10/24"])
    found = check_stacks([svc], ServerName("alpha"), frozenset({"net:198.18.6.0/24"}), False)
    assert {f.level for f in found} == {Level.PROBLEM, Level.WARNING}
    texts = " ".join(f.message for f in found)
    assert "arping" in texts and "net:198.18.5.0/24" in texts
    fine = check_stacks([svc], ServerName("alpha"), frozenset({"net:198.18.5.0/24"}), True)
    assert fine == []


def test_status_column_and_edit_add_the_auxiliary_class() -> None:
    row = {"requires": ["db"], "avoids": [], "service_addresses": ["198.18.5.10/24"]}
    assert stack_text(row) == "needs db 198.18.5.10/24"
    assert stack_text({}) == "-"
    sets = parse_sets(["requires=db", "addresses=198.18.5.10/24"])
    raw = {"objectClass": ["top", "ndsclustApplication"]}
    assert stack_class(raw, sets) == {
        "objectClass": ["top", "ndsclustApplication", "ndsclustStack"]
    }
    assert stack_class({"objectclass": ["ndsclustStack"]}, sets) == {}
    assert app_fields.field_named("address").attr == "ndsclustServiceAddress"


def test_local_resources_and_interface_choice() -> None:
    own = [
        ("lo", ipaddress.ip_interface("127.0.0.1/8")),
        ("lan0", ipaddress.ip_interface("198.18.5.1/24")),
        ("lan0", ipaddress.ip_interface("fe80::1/64")),
    ]
    offered = address.resources_of(own)
    assert {"net:198.18.5.0/24", "iface:lan0", "addr:198.18.5.1"} <= offered
    assert not any(r.startswith("net:127.") or r.startswith("net:fe80") for r in offered)
    assert address.device_for("198.18.5.10/24", own) == "198.18.5.10/24@lan0"
    try:
        address.device_for("198.18.9.10/24", own)
    except Exception as e:  # SupervisorError: the reason names the network
        assert "198.18.9.0/24" in str(e)
    else:
        raise AssertionError("no interface on the network, yet one was chosen")


def test_holder_parses_and_builds_an_unsolicited_advertisement() -> None:
    h = address_holder.Held("fd00::10/64@lan0")
    assert h.dev == "lan0" and str(h) == "fd00::10/64@lan0"
    packet = address_holder.neighbour_advertisement(h.packed, bytes.fromhex("020000000001"))
    assert packet[0] == 136 and packet[4] & 0x20  # neighbour advertisement, override
    assert packet[8:24] == ipaddress.IPv6Address("fd00::10").packed
    assert packet[24:26] == b"\x02\x01" and len(packet) == 32


def test_unload_and_health_commands_keep_the_programs_user() -> None:
    assert address._as_user(("/bin/kill",), "svc")[-3:] == ("--exec-only", "--", "/bin/kill")
    assert "--user" in address._as_user(("/bin/kill",), "svc")
    assert address._as_user(("/bin/kill",), None) == ("/bin/kill",)
