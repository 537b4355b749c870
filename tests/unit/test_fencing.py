"""Fencing other servers without a server: the loader's checks of the fencing section,
the agent runner, the fence record, the pure decisions, and the executor's gate against
an in-memory directory (docs/design.md section 4, "Fencing other servers")."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from ndsclust import config
from ndsclust.confread import Reader
from ndsclust.errors import ConfigError, EntryExists, SwapConflict
from ndsclust.fencing import agent, plan
from ndsclust.fencing import config as fconfig
from ndsclust.fencing.fencer import FencePending, Gate
from ndsclust.fencing.record import FenceState, Phase, parse
from ndsclust.ldapstore import fence_records
from ndsclust.ldapstore.fence_records import FenceRecord
from ndsclust.ldapstore.store import Store
from ndsclust.model import App, AppState, AppType, ServerName, StateValue, Tag
from ndsclust.sentinel.actions import EventKind
from ndsclust.sentinel.recorder import Record

A, B, C = ServerName("alpha"), ServerName("beta"), ServerName("gamma")
META = """<?xml version="1.0" ?>
<resource-agent name="fence_test" shortdesc="test">
<parameters>
  <parameter name="action" unique="0" required="1"/>
  <parameter name="ip" unique="0" required="1" obsoletes="ipaddr"/>
  <parameter name="ipaddr" unique="0" required="1" deprecated="1"/>
  <parameter name="plug" unique="0" required="1"/>
  <parameter name="password" unique="0" required="0"/>
</parameters>
</resource-agent>
"""
REAL = Path("/usr/sbin/fence_apc")


def script(tmp_path: Path, name: str, body: str) -> str:
    p = tmp_path / name
    p.write_text("#!/bin/sh\n" + body)
    p.chmod(p.stat().st_mode | stat.S_IXUSR)
    return str(p)


def meta_agent(tmp_path: Path) -> str:
    """An agent that prints META for action=metadata and records its input otherwise."""
    (tmp_path / "meta.xml").write_text(META)
    return script(
        tmp_path,
        "fence_test",
        f'input=$(cat)\ncase "$input" in *action=metadata*) cat {tmp_path}/meta.xml; exit 0;; esac\n'
        f'printf "%s\\n" "$input" > {tmp_path}/got\nexit 0\n',
    )


def problems(section: dict[str, Any]) -> list[str]:
    r = Reader()
    fconfig.parse(r, {"fencing": section})
    return r.problems


def servers(*devices: dict[str, Any]) -> dict[str, Any]:
    return {"servers": {"alpha": list(devices)}}


# -- the loader --------------------------------------------------------------------------


def test_a_missing_agent_is_refused_naming_the_key(tmp_path: Path) -> None:
    got = problems(servers({"agent": str(tmp_path / "fence_nothing")}))
    assert got == [
        f"fencing.servers.alpha[0].agent: {tmp_path}/fence_nothing: no such file "
        "(is the fence-agents package installed?)"
    ]


def test_an_agent_that_is_not_executable_or_relative_is_refused(tmp_path: Path) -> None:
    plain = tmp_path / "fence_plain"
    plain.write_text("#!/bin/sh\n")
    got = problems(servers({"agent": str(plain)}, {"agent": "fence_ipmilan"}))
    assert got == [
        f"fencing.servers.alpha[0].agent: {plain}: not executable",
        "fencing.servers.alpha[1].agent: 'fence_ipmilan' is not an absolute path",
    ]


def test_options_the_metadata_requires_are_named_when_missing(tmp_path: Path) -> None:
    exe = meta_agent(tmp_path)
    got = problems(servers({"agent": exe, "options": {"ipaddr": "192.0.2.1"}}))
    # ipaddr stands for ip (deprecated name); plug is missing.
    assert got == [
        "fencing.servers.alpha[0].options.plug: is missing; fence_test requires it "
        "(its action=metadata says so)"
    ]


def test_a_complete_device_loads_with_its_secret_from_a_file(tmp_path: Path) -> None:
    exe = meta_agent(tmp_path)
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    r = Reader()
    f = fconfig.parse(
        r,
        {
            "fencing": {
                "required": True,
                "servers": {
                    "alpha": [
                        {
                            "agent": exe,
                            "timeout": "5s",
                            "options": {"ip": "192.0.2.1", "plug": 3, "lanplus": True},
                            "password_file": str(pw),
                        }
                    ]
                },
            }
        },
    )
    assert r.problems == [] and f is not None and f.required
    (d,) = f.levels(A)
    assert d.timeout == 5.0 and d.action == "off"
    assert d.stdin_options() == {
        "ip": "192.0.2.1",
        "plug": "3",
        "lanplus": "true",
        "password": "s3cret",
    }
    assert "s3cret" not in d.describe() and "password=***" in d.describe()
    assert "s3cret" not in repr(d) and d.secret_files == (str(pw),)
    # Run as a fence it gets its options on standard input, the secret included.
    assert agent.run(d.agent, "off", d.stdin_options(), 5).ok
    assert (tmp_path / "got").read_text().splitlines() == [
        "action=off",
        "ip=192.0.2.1",
        "plug=3",
        "lanplus=true",
        "password=s3cret",
    ]


def test_a_secret_in_the_options_or_an_unreadable_secret_file_is_refused(tmp_path: Path) -> None:
    exe = meta_agent(tmp_path)
    got = problems(
        servers(
            {
                "agent": exe,
                "options": {"ip": "x", "plug": "1", "password": "inline"},
                "password_file": str(tmp_path / "none"),
            },
            {
                "agent": exe,
                "options": {"ip": "x", "plug": "1"},
                "secrets": {"key": str(tmp_path / "k")},
            },
        )
    )
    assert got == [
        "fencing.servers.alpha[0].password_file: password is also in options; "
        "a secret belongs in a file only",
        f"fencing.servers.alpha[1].secrets.key: {tmp_path}/k: No such file or directory",
    ]


def test_an_agent_without_metadata_must_answer_monitor(tmp_path: Path) -> None:
    mute = script(
        tmp_path, "fence_mute", "cat >/dev/null; echo 'cannot reach device' >&2; exit 1\n"
    )
    (problem,) = problems(servers({"agent": mute}))
    assert problem.startswith("fencing.servers.alpha[0].agent: ")
    assert "answers neither action=metadata" in problem and "cannot reach device" in problem
    ok = script(tmp_path, "fence_monitor", 'case "$(cat)" in *monitor*) exit 0;; esac; exit 1\n')
    assert problems(servers({"agent": ok})) == []


def test_bad_shapes_are_named() -> None:
    got = problems(
        {
            "retry_min": 10,
            "retry_max": 5,
            "servers": {
                "Alpha!": [],
                "beta": "fence_x",
                "gamma": [{"agent": "/bin/true", "action": "on", "nope": 1}],
            },
        }
    )
    assert "fencing.retry_max: 5.0s must not be below retry_min (10.0s)" in got
    assert any(p.startswith("fencing.servers.Alpha!: ") for p in got)
    assert (
        "fencing.servers.beta: must be a list of fence devices (agent, options), tried in order"
        in got
    )
    assert "fencing.servers.gamma[0].action: 'on'; allowed: off, reboot" in got
    assert any(p.startswith("fencing.servers.gamma[0].nope: unknown key") for p in got)


def test_the_loader_reads_a_real_agents_metadata() -> None:
    """fence_apc (Debian fence-agents, which tools/bootstrap.sh installs) requires ip,
    username and plug (its metadata)."""
    assert os.access(REAL, os.X_OK), f"{REAL} not found: run tools/bootstrap.sh"
    got = problems(servers({"agent": str(REAL), "options": {"ip": "192.0.2.9"}}))
    assert got == [
        f"fencing.servers.alpha[0].options.{key}: is missing; fence_apc requires it "
        "(its action=metadata says so)"
        for key in ("plug", "username")
    ]
    meta = agent.run(str(REAL), "metadata", {}, 30)
    names = {p.name for p in agent.parameters(meta.stdout)}
    assert {"ip", "username", "plug", "password"} <= names
    assert (
        problems(
            servers(
                {"agent": str(REAL), "options": {"ip": "192.0.2.9", "username": "apc", "plug": 4}}
            )
        )
        == []
    )


def sentinel_yaml(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    (tmp_path / "pw").write_text("directory-password")
    return {
        "server": "beta",
        "directory": {
            "uris": ["ldaps://ldap1.example.com"],
            "suffix": "dc=example,dc=com",
            "password_file": str(tmp_path / "pw"),
        },
        "channels": {"directory": {"interval": 0.1}},
        **extra,
    }


def test_required_fencing_lifts_the_timing_inequality(tmp_path: Path) -> None:
    """With every takeover waiting for a confirmed fence, failover may be shorter than
    max(lease, fence) + margin; without it the loader refuses the same timeouts."""
    exe = meta_agent(tmp_path)
    short = {"failover": 0.4, "lease": 0.5, "fence": 0.5}
    with pytest.raises(ConfigError) as err:
        config.parse(sentinel_yaml(tmp_path, timeouts=short))
    assert any(p.startswith("timeouts.failover: 0.4s must exceed") for p in err.value.problems)
    device = {"agent": exe, "options": {"ip": "x", "plug": "1"}}
    fencing = {"required": True, "servers": {"alpha": [device]}}
    cfg = config.parse(sentinel_yaml(tmp_path, timeouts=short, fencing=fencing))
    assert cfg.fencing is not None and cfg.fencing.required
    optional = {"servers": {"alpha": [device]}}
    with pytest.raises(ConfigError):
        config.parse(sentinel_yaml(tmp_path, timeouts=short, fencing=optional))


def test_the_example_configuration_round_trips_without_fencing(tmp_path: Path) -> None:
    data = yaml.safe_load(yaml.safe_dump(sentinel_yaml(tmp_path)))
    assert config.parse(data).fencing is None


# -- the agent runner ----------------------------------------------------------------------


def test_an_agent_past_its_timeout_is_killed_with_its_children(tmp_path: Path) -> None:
    exe = script(tmp_path, "fence_slow", "cat >/dev/null; echo going; sleep 30 & sleep 30\n")
    r = agent.run(exe, "off", {}, 0.5)
    assert r.code is None and not r.ok and "no answer within 0.5s (killed)" in r.summary()
    assert r.stdout == "going\n" and r.seconds < 10


def test_output_is_bounded_and_quoted_briefly(tmp_path: Path) -> None:
    exe = script(
        tmp_path, "fence_chatty", "cat >/dev/null; head -c 1000000 /dev/zero | tr '\\0' x; exit 3\n"
    )
    r = agent.run(exe, "off", {}, 10)
    assert r.code == 3 and len(r.stdout) == agent.OUTPUT_LIMIT
    assert len(r.summary()) < agent.QUOTE_LIMIT + 60 and r.summary().endswith("...")


def test_an_agent_that_cannot_run_is_a_result_not_an_exception(tmp_path: Path) -> None:
    r = agent.run(str(tmp_path / "gone"), "off", {}, 1)
    assert r.code is None and "cannot run" in r.summary()


def test_missing_options_follow_deprecated_names() -> None:
    params = agent.parameters(META)
    assert agent.missing_options(params, set()) == ["ip", "plug"]
    assert agent.missing_options(params, {"ip", "plug"}) == []
    assert agent.missing_options(params, {"ipaddr", "plug"}) == []
    with pytest.raises(ValueError):
        agent.parameters("<html/>")


# -- the record and the decisions -----------------------------------------------------------


def test_a_fence_state_round_trips_and_bad_values_are_named() -> None:
    s = FenceState(Phase.CONFIRMED, "beta", 1_800_000_000.25, 2, "fence_ipmilan")
    assert parse(s.value()) == s
    assert s.value().startswith("confirmed by=beta at=20270115")
    for bad in ("", "sleeping by=x", "owed by=x at=yesterday", "owed by"):
        with pytest.raises(ValueError):
            parse(bad)


def test_owe_block_and_clear() -> None:
    now = 1000.0
    assert plan.owe(None, B, now) == FenceState(Phase.OWED, B, now)
    confirmed = FenceState(Phase.CONFIRMED, C, 10.0, 1, "fence_x")
    assert plan.owe(confirmed, B, now) == FenceState(Phase.OWED, B, now)
    for phase in (Phase.OWED, Phase.FENCING, Phase.FAILED):
        st = FenceState(phase, C, 10.0)
        assert plan.owe(st, B, now) is None and plan.blocks(st)
        assert plan.back_from_start(st, A, now) == FenceState(Phase.CLEAR, A, now)
    assert not plan.blocks(None) and not plan.blocks(confirmed)
    assert plan.back_from_start(None, A, now) is None
    assert plan.back_from_start(FenceState(Phase.CLEAR, A, 1.0), A, now) is None


def test_whose_turn_it_is() -> None:
    kw: dict[str, Any] = {
        "running_here": False,
        "holder_heard": True,
        "longest": 20.0,
        "retry": (2.0, 60.0),
    }
    assert plan.next_step(FenceState(Phase.OWED, C, 0.0), B, 5.0, **kw).take
    lock = FenceState(Phase.FENCING, C, 100.0)
    assert not plan.next_step(lock, B, 110.0, **kw).take  # C is at it
    assert plan.next_step(lock, B, 131.0, **kw).take  # 31 s > 20 + 10: stale
    assert plan.next_step(lock, B, 110.0, **{**kw, "holder_heard": False}).take  # C died
    mine = FenceState(Phase.FENCING, B, 100.0)
    assert not plan.next_step(mine, B, 101.0, **{**kw, "running_here": True}).take
    assert plan.next_step(mine, B, 101.0, **kw).take  # an earlier life of this sentinel
    failed = FenceState(Phase.FAILED, C, 100.0, attempts=3)  # backoff 2, 4, 8
    step = plan.next_step(failed, B, 107.0, **kw)
    assert not step.take and step.until == 108.0
    assert plan.next_step(failed, B, 108.0, **kw).take
    assert [plan.backoff(n, 2, 60) for n in range(8)] == [0, 2, 4, 8, 16, 32, 60, 60]


def result(name: str, code: int | None, err: str = "") -> agent.Result:
    return agent.Result(f"/usr/sbin/{name}", "off", code, "", err, 0.1)


def test_the_outcome_names_every_level_tried() -> None:
    ok = plan.outcome(A, [result("fence_ipmilan", 1, "timed out"), result("fence_apc", 0)])
    assert ok.confirmed and ok.via == "fence_apc"
    assert ok.text == (
        "alpha fenced by fence_apc; level 1 fence_ipmilan action=off: exit 1: timed out; "
        "level 2 fence_apc action=off: exit 0"
    )
    bad = plan.outcome(A, [result("fence_ipmilan", None)])
    assert not bad.confirmed and bad.text.startswith("fencing alpha failed: level 1 fence_ipmilan")


# -- the gate, against an in-memory directory ------------------------------------------------


class MemoryStore:
    """The three session operations the fence records are kept with (``Session.search``,
    ``add``, ``swap``), with compare-and-swap semantics, and ``Store``'s typed fence-record
    methods over them."""

    base = "ou=ndsclust,dc=example,dc=com"

    def __init__(self) -> None:
        self.entries: dict[str, dict[str, list[str]]] = {}

    def search(
        self, base: str, filt: str, *, scope: str = "SUBTREE", attributes: Sequence[str] = ()
    ) -> list[tuple[str, dict[str, list[Any]]]]:
        if scope == "BASE":
            e = self.entries.get(base)
            return [(base, {k: [v.encode() for v in vs] for k, vs in e.items()})] if e else []
        return [(dn, {}) for dn in self.entries if dn.endswith("," + base)]

    def add(self, dn: str, attrs: Mapping[str, Sequence[str]]) -> None:
        if dn in self.entries:
            raise EntryExists(dn)
        self.entries[dn] = {k: list(v) for k, v in attrs.items()}

    def swap(
        self,
        dn: str,
        attribute: str,
        expected: str | None,
        new: str | None,
        *,
        also: Mapping[str, list[str] | None] | None = None,
        **_: Any,
    ) -> None:
        e = self.entries[dn]
        if e.get(attribute, [None])[0] != expected:
            raise SwapConflict(dn, attribute, expected, new)
        e[attribute] = [new] if new is not None else []
        for k, v in (also or {}).items():
            if v is None:
                e.pop(k, None)
            else:
                e[k] = v

    # The store's own fence-record methods, over the operations above.
    fence_record = Store.fence_record
    fence_records = Store.fence_records
    swap_fence_record = Store.swap_fence_record

    def state(self, server: str) -> FenceState | None:
        e = self.entries.get(f"cn=fence-{server},ou=events,{self.base}")
        return parse(e["ndsclustFenceState"][0]) if e else None


class Records:
    def __init__(self) -> None:
        self.got: list[Record] = []

    def put(self, record: Record) -> None:
        self.got.append(record)


def gate(store: MemoryStore, records: Records, outcomes: list[int], calls: list[str]) -> Gate:
    def run(exe: str, action: str, options: Mapping[str, str], timeout: float) -> agent.Result:
        calls.append(f"{Path(exe).name} {action} {options['plug']}")
        code = outcomes.pop(0)
        return agent.Result(exe, action, code, "", "" if code == 0 else "no route to PDU", 0.01)

    devices = tuple(
        fconfig.Device(f"/usr/sbin/fence_{n}", "off", 5.0, {"plug": n}) for n in ("ipmi", "pdu")
    )
    settings = fconfig.Fencing({A: devices, C: devices}, retry_min=2.0, retry_max=8.0)
    clock = iter(float(t) for t in range(1000, 100000))
    return Gate(
        B,
        settings,
        store=lambda: store,
        heard_now=lambda s: False,
        records=records,
        wall=lambda: next(clock),
        run=run,
    )


def settle(g: Gate) -> None:
    for t in g.threads:
        t.join(10)


APP = App(Tag("web"), AppType.CAPABLE, ("/bin/web",), A, (B,))


def test_no_start_before_the_gate_cleared_this_servers_own_record() -> None:
    store, records = MemoryStore(), Records()
    store.add(
        f"cn=fence-beta,ou=events,{store.base}",
        {
            "objectClass": ["ndsclustFence"],
            "ndsclustFenceState": [FenceState(Phase.CONFIRMED, "gamma", 5.0).value()],
        },
    )
    g = gate(store, records, [], [])
    with pytest.raises(FencePending):
        g.before_start(APP)
    g.cycle()
    settle(g)
    st = store.state(B)
    assert st is not None and st.phase is Phase.CLEAR and st.by == B
    g.before_start(APP)  # nothing owed: it may start


def test_a_takeover_owes_a_fence_and_starts_only_after_one_succeeded() -> None:
    store, records, calls = MemoryStore(), Records(), []
    g = gate(store, records, [1, 0], calls)
    g.cycle()
    settle(g)
    before = g.claiming(A)
    assert before is not None
    st = store.state(A)
    assert st is not None and st.phase is Phase.OWED
    with pytest.raises(FencePending) as wait:
        g.before_start(APP)
    assert wait.value.state is None  # nothing failed yet: the state stays loading
    settle(g)
    assert calls == ["fence_ipmi off ipmi", "fence_pdu off pdu"]  # level 1 failed, level 2 worked
    st = store.state(A)
    assert (
        st is not None
        and st.phase is Phase.CONFIRMED
        and st.via == "fence_pdu"
        and st.attempts == 1
    )
    g.before_start(APP)
    kinds = [(r.kind, r.notify) for r in records.got]
    assert kinds == [(EventKind.FENCE, False), (EventKind.FENCE, True)]
    assert "level 1 fence_ipmi action=off: exit 1: no route to PDU" in records.got[0].text


def test_a_failed_fence_shows_in_the_state_and_is_retried_after_a_backoff() -> None:
    store, records, calls = MemoryStore(), Records(), []
    g = gate(store, records, [1, 1, 1, 0], calls)
    g.cycle()
    settle(g)
    g.claiming(A)
    with pytest.raises(FencePending):
        g.before_start(APP)
    settle(g)
    with pytest.raises(FencePending) as wait:
        g.before_start(APP)
    state = wait.value.state
    assert state is not None and state.state is AppState.FAILED
    assert state.reason.startswith("fencing alpha failed: level 1 fence_ipmi action=off: exit 1")
    assert state.reason.endswith("; retried with a backoff")
    assert [r.kind for r in records.got] == [EventKind.FENCE_FAILED] * 2
    # The same failure shown already: not written again.
    with pytest.raises(FencePending) as again:
        g.before_start(replace(APP, state=state))
    assert again.value.state is None
    # The clock moves on past the backoff (2 s): the next call tries again and succeeds.
    for _ in range(5):
        try:
            g.before_start(APP)
            break
        except FencePending:
            settle(g)
    st = store.state(A)
    assert st is not None and st.phase is Phase.CONFIRMED and st.attempts == 2
    assert len(calls) == 4


def test_a_withdrawn_claim_takes_its_debt_back() -> None:
    store, records = MemoryStore(), Records()
    g = gate(store, records, [], [])
    before = g.claiming(A)
    assert before is not None
    g.claim_failed(A, before)
    st = store.state(A)
    assert st is not None and st.phase is Phase.CLEAR
    assert not plan.blocks(st)


def test_a_server_without_devices_waits_for_the_operator_when_fencing_is_required() -> None:
    store, records = MemoryStore(), Records()
    g = gate(store, records, [], [])
    g.settings = fconfig.Fencing({}, required=True)
    g.cycle()
    settle(g)
    assert g.claiming(A) is not None
    with pytest.raises(FencePending) as wait:
        g.before_start(APP)
    assert wait.value.state == StateValue(
        AppState.FAILED,
        "alpha must be fenced and no fence device is configured for it: once it is off, "
        "run: ndsclust fence --confirm-off alpha",
    )
    found = store.fence_record(A)
    store.swap_fence_record(
        A, found, FenceState(Phase.CONFIRMED, "operator:cli", 5.0, via="confirm-off")
    )
    g.before_start(APP)


def test_fence_records_decode_write_and_list_as_typed_values() -> None:
    store = MemoryStore()
    assert store.fence_record(A) == FenceRecord(None, None, "")
    owed = FenceState(Phase.OWED, B, 5.0)
    made = store.swap_fence_record(A, store.fence_record(A), owed)
    assert made == FenceRecord(owed.value(), owed, "") == store.fence_record(A)
    with pytest.raises(SwapConflict):  # another server made it first
        store.swap_fence_record(A, FenceRecord(None, None), owed)
    failed = owed.moved(Phase.FAILED, B, 6.0, attempts=1)
    store.swap_fence_record(A, made, failed, "x" * 3000)
    got = store.fence_record(A)
    assert got.state == failed and got.text == "x" * fence_records.TEXT_LIMIT
    with pytest.raises(SwapConflict):  # expected what it was before
        store.swap_fence_record(A, made, owed)
    assert list(store.fence_records()) == [A]
    # A record whose state cannot be read, or has none, counts as owed.
    dn = fence_records.fence_dn(store.base, C)
    assert fence_records.decode(dn, {"ndsclustFenceState": [b"nonsense"]}).state == FenceState(
        Phase.OWED, "?", 0.0
    )
    assert fence_records.decode(dn, {"ndsclustFenceText": [b"t"]}) == FenceRecord(
        None, FenceState(Phase.OWED, "?", 0.0), "t"
    )


# -- doctor ------------------------------------------------------------------------------------


def test_doctor_reports_each_devices_health_and_the_records_that_hold_takeovers() -> None:
    from ndsclust.doctor.fencing import check_fencing
    from ndsclust.doctor.findings import Level

    monitors = {
        (A, 1): result("fence_ipmilan", 1, "connection timed out"),
        (A, 2): result("fence_apc", 0),
    }
    records = {
        "alpha": FenceState(Phase.FAILED, B, 5.0, attempts=3),
        "gamma": FenceState(Phase.CONFIRMED, B, 5.0, 1, "fence_apc"),
        "delta": None,
    }
    settings = fconfig.Fencing({A: ()}, required=True)
    got = [(f.level, f.subject) for f in check_fencing(settings, monitors, records, [A, B, C], B)]
    assert got == [
        (Level.PROBLEM, "alpha level 1"),
        (Level.OK, "alpha level 2"),
        (Level.WARNING, "alpha"),  # required, and no levels configured in this settings
        (Level.WARNING, "gamma"),
        (Level.PROBLEM, "alpha"),
        (Level.PROBLEM, "delta"),
    ]
    modes = {"/etc/ndsclust/fence.pw": 0o644, "/etc/ndsclust/ok.pw": 0o600}
    [loose] = check_fencing(None, {}, {}, [], None, secret_modes=modes)
    assert loose.level is Level.WARNING and loose.fix == "chmod 0600 /etc/ndsclust/fence.pw"
    [failed] = [f for f in check_fencing(None, monitors, records, [], None) if f.subject == "alpha"]
    assert "a fence is failed (by beta, 3 attempt(s))" in failed.message
    assert "ndsclust fence --confirm-off alpha" in failed.fix
