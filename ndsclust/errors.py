"""The one exception hierarchy of ndsclust.

    NdsclustError
    ├── ConfigError            a configuration file or option is wrong (exit 2)
    ├── StoreError             talking to the directory went wrong
    │   ├── ProviderUnreachable    no provider in the list answered (exit 3)
    │   │   └── BindRefused        the providers that answered refused the bind (exit 2)
    │   ├── SwapConflict           a compare-and-swap found another value: re-read, decide again
    │   ├── EntryInvalid           an entry in the directory breaks the rules (names DN and attribute)
    │   ├── EntryExists            an add found the entry already there
    │   ├── NoSuchEntry            the entry named is not in the directory
    │   └── SchemaError            the ndsclust schema is missing or of another version
    └── SupervisorError        a program could not be started or stopped

ldap3's exceptions never leave ``ndsclust.ldapstore``: they are translated at that boundary.
"""

from __future__ import annotations


class NdsclustError(Exception):
    """Base of every error ndsclust raises on purpose."""


class ConfigError(NdsclustError):
    """A configuration is wrong. ``problems`` lists every problem found, one line each."""

    def __init__(self, source: str, problems: list[str] | tuple[str, ...]) -> None:
        self.source = source
        self.problems = tuple(problems)
        n = len(self.problems)
        head = f"{source}: {n} error{'s' if n != 1 else ''}"
        super().__init__("\n  ".join([head, *self.problems]))


class StoreError(NdsclustError):
    """Talking to the directory failed."""


class ProviderUnreachable(StoreError):
    """No provider in the list could be reached and bound. ``answered``: the provider said
    no (connection refused, bind or TLS refused) rather than staying silent: a refusal is
    not latency."""

    def __init__(self, message: str, *, answered: bool = False) -> None:
        super().__init__(message)
        self.answered = answered


class BindRefused(ProviderUnreachable):
    """A provider refused the bind itself (wrong DN or password, a mechanism it does not
    take): the directory is there, the credentials are wrong. ``everywhere``: every provider
    of the list said so, so trying again changes nothing."""

    def __init__(self, message: str, *, everywhere: bool = False) -> None:
        super().__init__(message, answered=True)
        self.everywhere = everywhere


class Withdrawn(StoreError):
    """A write its caller withdrew at the last moment before sending it (its reason no
    longer holds): nothing was sent."""

    def __init__(self, dn: str, why: str) -> None:
        super().__init__(f"{dn}: write withdrawn: {why}")
        self.dn = dn
        self.why = why


class SwapConflict(StoreError):
    """A compare-and-swap did not find the value it expected: re-read and decide again."""

    def __init__(self, dn: str, attribute: str, expected: str | None, new: str | None) -> None:
        self.dn = dn
        self.attribute = attribute
        self.expected = expected
        self.new = new
        super().__init__(
            f"{dn}: {attribute} is no longer {expected!r}; someone else changed it first "
            f"(wanted to set {new!r}); re-read the entry and decide again"
        )


class EntryInvalid(StoreError):
    """An entry breaks the rules; names the DN, the attribute, the value and what is allowed."""

    def __init__(self, dn: str, attribute: str, problem: str) -> None:
        self.dn = dn
        self.attribute = attribute
        self.problem = problem
        super().__init__(f"{dn}: {attribute}: {problem}")


class EntryExists(StoreError):
    """An add found the entry already in the directory."""


class NoSuchEntry(StoreError):
    """The entry named is not in the directory."""


class SchemaError(StoreError):
    """The ndsclust schema is missing from a provider, or is another version."""


class SupervisorError(NdsclustError):
    """A program could not be started or stopped."""
