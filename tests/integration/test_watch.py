"""The RFC 4533 change watch against a real 3-provider cluster (docs/design.md section 2).

Writes go through the ldap-utils command-line tools, as an operator's would. Each test
works in its own OU under the suffix, so tests sharing the session cluster do not see each
other's entries; tests that kill, freeze or restart a provider get a private cluster.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from ndsclust.lab.directory import DirectoryCluster, wait_until
from ndsclust.ldapstore.connection import Providers
from ndsclust.ldapstore.syncproto import parse_openldap_cookie
from ndsclust.ldapstore.watch import (
    POLL,
    Changed,
    ChangeKind,
    Deleted,
    Reconnected,
    RefreshDone,
    Watch,
    WatchEvent,
)

EVENT_TIMEOUT = 10.0


def ldap_tool(directory: DirectoryCluster, tool: str, uri: str, ldif: str) -> None:
    proc = subprocess.run(
        [tool, "-x", "-H", uri, "-D", directory.admin_dn, "-w", directory.admin_password],
        input=ldif.encode(),
        capture_output=True,
        timeout=30,
    )
    assert proc.returncode == 0, f"{tool} failed: {proc.stderr.decode(errors='replace')}"


def ou_ldif(dn: str, description: str | None = None) -> str:
    rdn = dn.split(",", 1)[0].split("=", 1)[1]
    text = f"dn: {dn}\nobjectClass: organizationalUnit\nou: {rdn}\n"
    return text + (f"description: {description}\n" if description else "") + "\n"


def modify_ldif(dn: str, description: str) -> str:
    return f"dn: {dn}\nchangetype: modify\nreplace: description\ndescription: {description}\n\n"


def delete_ldif(dn: str) -> str:
    return f"dn: {dn}\nchangetype: delete\n\n"


def new_sub(directory: DirectoryCluster) -> str:
    """A fresh OU added on provider 0 and replicated everywhere."""
    dn = f"ou=w{uuid.uuid4().hex[:10]},{directory.suffix}"
    ldap_tool(directory, "ldapadd", directory.uris[0], ou_ldif(dn))
    directory.wait_converged()
    return dn


@pytest.fixture
def sub(directory: DirectoryCluster) -> str:
    return new_sub(directory)


def restart(directory: DirectoryCluster, index: int, sub: str) -> None:
    """Start a killed provider again and wait until the cluster agrees. A restarted provider
    hands its peers a contextCSN of its own that it does not show itself until it writes
    something, so wait_converged() would never agree: one write through it settles that."""
    directory.providers[index].start()
    ldap_tool(
        directory, "ldapmodify", directory.uris[index], modify_ldif(sub, f"restarted {index}")
    )
    directory.wait_converged()


def context_csns(directory: DirectoryCluster, index: int, base: str) -> list[str]:
    proc = subprocess.run(
        [
            "ldapsearch",
            "-LLL",
            "-x",
            "-H",
            directory.uris[index],
            "-D",
            directory.admin_dn,
            "-w",
            directory.admin_password,
            "-b",
            base,
            "-s",
            "base",
            "contextCSN",
        ],
        capture_output=True,
        timeout=30,
        check=True,
    )
    return [
        line.split(": ", 1)[1]
        for line in proc.stdout.decode().splitlines()
        if line.startswith("contextCSN: ")
    ]


def providers(directory: DirectoryCluster, uris: list[str] | None = None) -> Providers:
    creds = directory.admin_credentials()
    return Providers(uris or directory.uris, creds, timeout=1.0)


@pytest.fixture
def watches(directory: DirectoryCluster) -> Iterator[Callable[..., Watch]]:
    """Build and start watches (on the session cluster unless ``cluster`` is given); every
    one is stopped when the test ends, even on failure."""
    started: list[Watch] = []

    def make(
        base: str, *, cluster: DirectoryCluster | None = None, prefer: int = 2, **kw: object
    ) -> Watch:
        w = Watch(providers(cluster or directory), base, prefer=prefer, **kw)  # type: ignore[arg-type]
        started.append(w)
        w.start()
        return w

    yield make
    for w in started:
        w.stop()


def collect(
    watch: Watch, done: Callable[[list[WatchEvent]], bool], timeout: float = EVENT_TIMEOUT
) -> list[WatchEvent]:
    """Take events until ``done(events)`` holds; fail naming what arrived if it never does."""
    events: list[WatchEvent] = []
    deadline = time.monotonic() + timeout
    while not done(events):
        left = deadline - time.monotonic()
        assert left > 0, f"gave up after {timeout}s; events so far: {events}"
        event = watch.get(min(left, 0.2))
        if event is not None:
            events.append(event)
    return events


def until_refreshed(events: list[WatchEvent]) -> bool:
    return any(isinstance(e, RefreshDone) for e in events)


def changed(events: list[WatchEvent], dn: str) -> list[Changed]:
    return [e for e in events if isinstance(e, Changed) and e.entry.dn == dn]


def test_add_on_provider_0_arrives_on_a_watch_of_provider_2(
    directory: DirectoryCluster, sub: str, watches: Callable[..., Watch]
) -> None:
    w = watches(sub, prefer=2)
    first = collect(w, until_refreshed)
    assert [type(e) for e in first] == [Changed, RefreshDone]
    assert w.provider == directory.uris[2]

    dn = f"ou=a,{sub}"
    ldap_tool(directory, "ldapadd", directory.uris[0], ou_ldif(dn, "café ☕"))
    (event,) = changed(collect(w, lambda ev: bool(changed(ev, dn))), dn)
    assert event.kind is ChangeKind.ADD
    assert event.entry.attributes["ou"] == ("a",)
    assert event.entry.attributes["description"] == ("café ☕",)
    assert event.entry.attributes["entryUUID"] == (event.entry.uuid,)  # operational too
    assert w.stats.entries == 2 and w.stats.full_refreshes == 1 and w.stats.reconnects == 0


def test_modify_and_delete_arrive_and_advance_the_cookie(
    directory: DirectoryCluster, sub: str, watches: Callable[..., Watch]
) -> None:
    dn = f"ou=b,{sub}"
    ldap_tool(directory, "ldapadd", directory.uris[0], ou_ldif(dn, "v1"))
    w = watches(sub, prefer=2)
    (added,) = changed(collect(w, until_refreshed), dn)
    refreshed_cookie = w.cookie
    assert refreshed_cookie is not None
    parse_openldap_cookie(refreshed_cookie)

    ldap_tool(directory, "ldapmodify", directory.uris[0], modify_ldif(dn, "v2"))
    (modified,) = changed(collect(w, lambda ev: bool(changed(ev, dn))), dn)
    assert modified.kind is ChangeKind.MODIFY
    assert modified.entry.uuid == added.entry.uuid
    assert modified.entry.attributes["description"] == ("v2",)
    assert w.cookie != refreshed_cookie

    ldap_tool(directory, "ldapmodify", directory.uris[0], delete_ldif(dn))
    events = collect(w, lambda ev: any(isinstance(e, Deleted) for e in ev))
    assert events == [Deleted(added.entry.uuid, dn)]
    assert added.entry.uuid not in w.known


def test_killed_provider_resumes_elsewhere_from_the_cookie(
    fresh_directory: Callable[..., DirectoryCluster], watches: Callable[..., Watch]
) -> None:
    cluster = fresh_directory(n=3, with_schema=False)
    sub = new_sub(cluster)
    dns = [f"ou=e{i},{sub}" for i in range(50)]
    ldap_tool(cluster, "ldapadd", cluster.uris[0], "".join(ou_ldif(dn) for dn in dns))
    cluster.wait_converged()
    w = watches(sub, cluster=cluster, prefer=2)
    refresh = collect(w, until_refreshed)
    assert sum(isinstance(e, Changed) for e in refresh) == 51

    victim = cluster.providers[2]
    victim.kill()
    for dn in dns[:2]:
        ldap_tool(cluster, "ldapmodify", cluster.uris[0], modify_ldif(dn, "after"))

    def resumed_and_seen(ev: list[WatchEvent]) -> bool:
        after = [
            e
            for e in ev
            if isinstance(e, Changed) and e.entry.attributes.get("description") == ("after",)
        ]
        return len(after) == 2 and _refresh_after_reconnect(ev)

    events = collect(w, resumed_and_seen)
    (reconnected,) = [e for e in events if isinstance(e, Reconnected)]
    assert reconnected.resumed and reconnected.provider_uri != victim.url
    resent = [e for e in events if isinstance(e, Changed)]
    assert {e.entry.dn for e in resent} == set(dns[:2])
    assert all(e.kind is ChangeKind.MODIFY for e in resent)
    assert w.stats.reconnects == 1 and w.stats.full_refreshes == 1


def test_resumed_on_another_provider_hears_the_first_providers_writes(
    directory: DirectoryCluster, sub: str, watches: Callable[..., Watch]
) -> None:
    """The cookie slapd hands out names its own server; a watch that resumes with it on
    another provider must still hear of changes made through the first (the write
    provider), or a sentinel whose watch moved would go deaf to every write."""
    first = watches(sub, prefer=0)
    collect(first, until_refreshed)
    ldap_tool(directory, "ldapmodify", directory.uris[0], modify_ldif(sub, "before"))
    collect(first, lambda ev: bool(changed(ev, sub)))
    cookie, known = first.cookie, first.known
    assert cookie is not None and parse_openldap_cookie(cookie).sid is not None
    first.stop()

    second = watches(sub, prefer=1, cookie=cookie, known=known)
    collect(second, until_refreshed)
    assert second.provider == directory.uris[1]
    for origin in (0, 2):
        ldap_tool(
            directory, "ldapmodify", directory.uris[origin], modify_ldif(sub, f"via {origin}")
        )
        (seen,) = changed(collect(second, lambda ev: bool(changed(ev, sub))), sub)
        assert seen.entry.attributes["description"] == (f"via {origin}",)


def _refresh_after_reconnect(events: list[WatchEvent]) -> bool:
    kinds = [type(e) for e in events]
    return Reconnected in kinds and RefreshDone in kinds[kinds.index(Reconnected) :]


def test_frozen_provider_is_left_within_twice_the_keepalive(
    fresh_directory: Callable[..., DirectoryCluster], watches: Callable[..., Watch]
) -> None:
    cluster = fresh_directory(n=3, with_schema=False)
    keepalive = 0.3
    w = watches(cluster.suffix, cluster=cluster, prefer=2, keepalive=keepalive)
    collect(w, until_refreshed)
    frozen = cluster.providers[2]
    frozen.pause()
    began = time.monotonic()
    events = collect(w, _refresh_after_reconnect)
    elapsed = time.monotonic() - began
    assert isinstance(events[0], Reconnected) and events[0].provider_uri != frozen.url
    # Bound: 2 x keepalive + one supervisor tick after the last message, plus the resume.
    assert elapsed < 2 * keepalive + POLL + 1.0, elapsed


def test_stale_cookie_gives_a_present_phase_that_reports_vanished_entries(
    fresh_directory: Callable[..., DirectoryCluster], watches: Callable[..., Watch]
) -> None:
    directory = fresh_directory(n=3, with_schema=False)
    sub = new_sub(directory)
    dns = [f"ou=s{i},{sub}" for i in range(3)]
    ldap_tool(directory, "ldapadd", directory.uris[0], "".join(ou_ldif(dn) for dn in dns))
    directory.wait_converged()
    first = watches(sub, cluster=directory, prefer=2)
    uuids = {
        e.entry.dn: e.entry.uuid for e in collect(first, until_refreshed) if isinstance(e, Changed)
    }
    cookie, known = first.cookie, first.known
    first.stop()
    # A restarted provider has an empty session log: our cookie is stale there.
    directory.providers[2].kill()
    restart(directory, 2, sub)
    ldap_tool(directory, "ldapmodify", directory.uris[0], delete_ldif(dns[1]))
    directory.wait_converged()

    second = watches(sub, cluster=directory, prefer=2, cookie=cookie, known=known)
    events = collect(second, until_refreshed)
    assert [e for e in events if isinstance(e, Deleted)] == [Deleted(uuids[dns[1]], dns[1])]
    assert second.stats.full_refreshes == 0
    assert set(second.known) == {uuids[sub], uuids[dns[0]], uuids[dns[2]]}


def test_invalid_cookie_gives_a_full_refresh_that_reports_vanished_entries(
    directory: DirectoryCluster,
    sub: str,
    watches: Callable[..., Watch],
    caplog: pytest.LogCaptureFixture,
) -> None:
    dns = [f"ou=i{i},{sub}" for i in range(2)]
    ldap_tool(directory, "ldapadd", directory.uris[0], "".join(ou_ldif(dn) for dn in dns))
    directory.wait_converged()
    first = watches(sub, prefer=1)
    uuids = {
        e.entry.dn: e.entry.uuid for e in collect(first, until_refreshed) if isinstance(e, Changed)
    }
    known = first.known
    first.stop()
    ldap_tool(directory, "ldapmodify", directory.uris[0], delete_ldif(dns[0]))
    directory.wait_converged()

    with caplog.at_level(logging.WARNING, logger="ndsclust.ldapstore.watch"):
        second = watches(sub, prefer=1, cookie=b"not a cookie", known=known)
    assert "event=watch_cookie_invalid" in caplog.text
    events = collect(second, until_refreshed)
    assert [e for e in events if isinstance(e, Deleted)] == [Deleted(uuids[dns[0]], dns[0])]
    assert second.stats.full_refreshes == 1


def test_refresh_required_leads_to_a_full_refresh(
    directory: DirectoryCluster,
    sub: str,
    watches: Callable[..., Watch],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The accesslog database refuses present phases (olcSpNoPresent), so a stale cookie
    # there is answered with e-syncRefreshRequired (4096). Its root entry has no
    # entryUUID: a malformed Sync State that must be logged and skipped, nothing more.
    vanished = str(uuid.uuid4())
    # Stale for every server that wrote to that database: a cookie lacking one of them
    # would be answered with that server's changes instead.
    sids = sorted({csn.split("#")[2] for csn in context_csns(directory, 0, "cn=accesslog")})
    stale = (
        "rid=000,csn=" + ";".join(f"20000101000000.000000Z#000000#{sid}#000000" for sid in sids)
    ).encode()
    with caplog.at_level(logging.WARNING, logger="ndsclust.ldapstore.watch"):
        w = watches(
            "cn=accesslog",
            prefer=0,
            cookie=stale,
            filter=f"(|(objectClass=auditContainer)(reqDN={sub}))",
            known={vanished: "reqStart=20000101000000.000000Z,cn=accesslog"},
        )
        events = collect(w, until_refreshed)
    assert "event=watch_refresh_required" in caplog.text
    assert "event=watch_bad_message" in caplog.text and 'dn="cn=accesslog"' in caplog.text
    assert [e for e in events if isinstance(e, Deleted)] == [
        Deleted(vanished, "reqStart=20000101000000.000000Z,cn=accesslog")
    ]
    (add_of_sub,) = [e for e in events if isinstance(e, Changed)]
    assert add_of_sub.entry.attributes["reqDN"] == (sub,)
    assert w.stats.full_refreshes == 1


def test_failed_search_is_logged_and_retried(
    directory: DirectoryCluster, watches: Callable[..., Watch], caplog: pytest.LogCaptureFixture
) -> None:
    base = f"ou=later{uuid.uuid4().hex[:10]},{directory.suffix}"
    with caplog.at_level(logging.WARNING, logger="ndsclust.ldapstore.watch"):
        w = watches(base, prefer=1)
        wait_until(
            lambda: "event=watch_search_ended" in caplog.text,
            5.0,
            what="the watch to report the missing base",
        )
    assert "result=32 description=noSuchObject" in caplog.text
    ldap_tool(directory, "ldapadd", directory.uris[0], ou_ldif(base))
    events = collect(w, lambda ev: bool(changed(ev, base)) and until_refreshed(ev))
    assert isinstance(events[0], Reconnected)
    assert w.stats.reconnects >= 1


def test_stop_leaves_no_thread_behind(directory: DirectoryCluster, sub: str) -> None:
    before = set(threading.enumerate())
    w = Watch(providers(directory), sub, prefer=2)
    w.start()
    try:
        collect(w, until_refreshed)
        assert len(set(threading.enumerate()) - before) == 2  # supervisor + receiver
    finally:
        began = time.monotonic()
        w.stop()
        w.stop()
    assert time.monotonic() - began < 1.0
    assert set(threading.enumerate()) <= before


def test_stop_while_reconnecting(
    directory: DirectoryCluster, caplog: pytest.LogCaptureFixture
) -> None:
    # A port bound but not listening refuses connections, and stays ours for the whole test:
    # a port closed again could be taken by another process, whose answers are not LDAP.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"ldap://127.0.0.1:{s.getsockname()[1]}"
        before = set(threading.enumerate())
        w = Watch(providers(directory, [dead]), directory.suffix)
        with caplog.at_level(logging.WARNING, logger="ndsclust.ldapstore.watch"):
            w.start()
            try:
                wait_until(
                    lambda: "event=watch_unreachable" in caplog.text,
                    5.0,
                    what="the watch to fail connecting",
                )
            finally:
                began = time.monotonic()
                w.stop()
    assert time.monotonic() - began < 1.0
    assert set(threading.enumerate()) <= before
    assert w.get(0) is None and w.provider is None
