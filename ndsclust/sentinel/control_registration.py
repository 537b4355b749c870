"""What a cluster-aware program's registration writes, planned from the entry as it is
(FIG. 6 steps 602-604), and the write itself (``ndsclust.sentinel.control``'s
``register``)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Final

from ndsclust.control_protocol import Registration, RegistrationRefused
from ndsclust.errors import EntryExists, EntryInvalid, NoSuchEntry, SwapConflict
from ndsclust.ldapstore import entries
from ndsclust.ldapstore.store import Store
from ndsclust.model import App, AppType, ServerName

# What a registration writes, and so what it may change on an existing entry: never the
# host, the state, the marker or an operator's request.
REGISTERED: Final = (
    "ndsclustCommand",
    "ndsclustPrimaryServer",
    "ndsclustBackupServer",
    "ndsclustResource",
)


@dataclass(frozen=True, slots=True)
class Create:
    """A first registration: add this entry."""

    app: App


@dataclass(frozen=True, slots=True)
class Update:
    """A registration of an existing entry: replace these attributes (None removes one);
    empty: nothing to write."""

    changes: Mapping[str, list[str] | None]


def plan_registration(
    reg: Registration, existing: App | None, servers: Collection[str]
) -> Create | Update:
    """What registering ``reg`` writes, given the entry as it is (FIG. 6 steps 602-604).

    RegistrationRefused when it names an unknown server or the tag belongs to a program of
    another type.
    """
    wanted = reg.app()
    try:
        entries.check_references(wanted, servers)
    except EntryInvalid as e:
        raise RegistrationRefused(reg.tag, e.attribute, e.problem) from None
    if existing is None:
        return Create(wanted)
    if existing.type is not AppType.AWARE:
        raise RegistrationRefused(
            reg.tag,
            "ndsclustType",
            f"the tag belongs to a cluster-{existing.type.value} application, which an operator "
            "registered; a program registers only its own cluster-aware entry: choose another "
            f"tag, or remove that entry first (ndsclust app remove {reg.tag})",
        )
    have = entries.app_attributes(existing)
    want = entries.app_attributes(wanted)
    return Update({a: want.get(a) for a in REGISTERED if have.get(a) != want.get(a)})


def write_registration(store: Store, reg: Registration) -> tuple[str, ServerName | None]:
    """Register ``reg`` in the directory (FIG. 6 steps 602-604): (created, updated or
    unchanged, the host now). A race with another writer is planned once more from what
    it wrote; RegistrationRefused after a second one."""
    for attempt in range(2):
        try:
            existing: App | None = store.app(reg.tag)
        except NoSuchEntry:
            existing = None
        except EntryInvalid as e:
            raise RegistrationRefused(
                reg.tag,
                e.attribute,
                f"the entry in the directory is invalid ({e.problem}); fix or remove it first",
            ) from None
        servers, _ = store.servers()
        plan = plan_registration(reg, existing, servers)
        try:
            if isinstance(plan, Create):
                store.add_app(plan.app)
                return "created", plan.app.host
            assert existing is not None
            if not plan.changes:
                return "unchanged", existing.host
            # The type is part of the swap: if an operator made it capable meanwhile,
            # nothing is written.
            aware = AppType.AWARE.value
            store.swap(store.app_dn(reg.tag), "ndsclustType", aware, aware, also=plan.changes)
            return "updated", existing.host
        except (EntryExists, SwapConflict, NoSuchEntry):
            if attempt == 1:
                raise RegistrationRefused(
                    reg.tag,
                    "ndsclustTag",
                    "the entry kept changing while it was being registered; try again",
                ) from None
    raise AssertionError("unreachable")
