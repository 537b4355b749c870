"""``doctor``'s checks of service stacks (docs/design.md section 3, "Stacks"): sets that
cannot run (a missing tag, a cycle, no shared server), separations naming no application,
and, on the server doctor runs on (with ``--config``), service addresses it could not hold
and the announcement tool they need."""

from __future__ import annotations

from collections.abc import Sequence

from ndsclust.doctor.findings import Finding, Level
from ndsclust.model import App, ServerName, address_needs
from ndsclust.sentinel.stacks import find_stacks

STACK_FIX = (
    "fix ndsclustRequires or the server lists (ldapmodify, or ndsclust app edit TAG "
    "--set requires=... / --set backups=...): a set's members run together on one server"
)


def check_stacks(
    apps: Sequence[App],
    me: ServerName | None = None,
    offered: frozenset[str] | None = None,
    arping: bool | None = None,
) -> list[Finding]:
    """``offered``: what this server (``me``) offers service addresses (``net:``/``iface:``
    resources, ``ndsclust.sentinel.address.local_resources``), None when unknown;
    ``arping``: whether the IPv4 announcement tool is installed here."""
    by_tag = {a.tag: a for a in apps}
    out: list[Finding] = []
    stacks = find_stacks(by_tag)
    seen: set[tuple[str, ...]] = set()
    for stack in stacks.values():
        if stack.members in seen:
            continue
        seen.add(stack.members)
        subject = ", ".join(stack.members)
        if stack.problem is not None:
            out.append(Finding("stack", Level.PROBLEM, subject, stack.problem, STACK_FIX))
        else:
            text = (
                f"starts in order {' -> '.join(stack.members)} on one of {', '.join(stack.servers)}"
            )
            out.append(Finding("stack", Level.OK, subject, text))
    keys = {t.lower() for t in by_tag}
    for app in apps:
        for other in app.avoids:
            if other.lower() not in keys:
                out.append(
                    Finding(
                        "stack",
                        Level.WARNING,
                        app.tag,
                        f"ndsclustAvoids names {other}, which is not an application",
                        "remove the value or fix the tag",
                    )
                )
    with_addresses = [a for a in apps if a.addresses]
    if with_addresses and arping is False:
        out.append(
            Finding(
                "address",
                Level.PROBLEM,
                ", ".join(a.tag for a in with_addresses),
                "service addresses are announced with arping, which is not installed here",
                "apt-get install iputils-arping",
            )
        )
    if offered is not None and me is not None:
        for app in with_addresses:
            if me not in app.servers():
                continue
            lacking = sorted(address_needs(app.addresses) - offered)
            if lacking:
                out.append(
                    Finding(
                        "address",
                        Level.WARNING,
                        app.tag,
                        f"{me} cannot hold {', '.join(app.addresses)}: no "
                        f"{', '.join(lacking)} here, so it will not take it over",
                        "configure an interface on the address's network, or name one "
                        "with ip/prefix@interface",
                    )
                )
    return out
