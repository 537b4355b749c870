"""Bad input containment (docs/design.md invariant 4) for the sentinel's YAML configuration:
random documents, a valid configuration with random parts replaced, and random YAML text
yield a Config or one ConfigError whose every line starts with the YAML path at fault
(docs/style.md section 6), never another exception. ``fuzz_targets()`` hands the same checks
to ``tools/fuzz.py``.
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ndsclust import config
from ndsclust.errors import ConfigError

Target = tuple[st.SearchStrategy[Any], Callable[[Any], None]]
CI = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=30),
    st.sampled_from(
        [
            "0.5",
            "500ms",
            "1e999",
            "-1",
            "nan",
            ".inf",
            "127.0.0.1:7946",
            "10.0.0.300:1",
            "[::1]:1",
            "ldap://x",
            "ldaps://[x",
            "ldapi:///",
            "/dev/null",
            "/nonexistent/key",
            "a\0b",
            "x" * 5000,
            "root",
            "/bin/true",
        ]
    ),
)
yaml_like: st.SearchStrategy[Any] = st.recursive(
    leaf,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.text(max_size=12) | st.sampled_from(sorted(config.TOP_KEYS)), inner, max_size=5
        )
    ),
    max_leaves=25,
)


def base_config(key_file: str) -> dict[str, Any]:
    return {
        "server": "alpha",
        "cluster": "prod",
        "directory": {
            "uris": ["ldaps://ldap1:636", "ldapi:///"],
            "suffix": "dc=x",
            "ca_file": "/ca.crt",
            "start_tls": False,
            "allow_plain_ldap": False,
        },
        "resources": ["san1"],
        "channels": {
            "lan": {"addresses": ["127.0.0.1:7946"], "key_file": key_file, "interval": 0.1},
            "directory": {"interval": "100ms"},
            "disk": {
                "path": "/dev/null",
                "servers": ["alpha", "beta"],
                "direct": False,
                "sync": True,
            },
            "witness": {"address": "127.0.0.1:53"},
        },
        "timeouts": {"failover": 0.8, "fence": 0.5, "lease": 0.5},
        "supervision": {"max_restarts": 3},
        "programs": {
            "user": "app",
            "cwd": "/srv",
            "env": {"LANG": "C"},
            "allowed_commands": ["/bin/true"],
        },
        "notify": {"command": ["/usr/bin/logger"]},
        "control_socket": "/run/ndsclust.sock",
        "events": {"limit": 1000},
        "log": {"level": "info"},
    }


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield prefix + (k,)
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield prefix + (i,)
            yield from _paths(v, prefix + (i,))


# Settings naming files, and file names that are no use: the loader opens some of them.
FILE_SETTINGS = (
    ("directory", "password_file"),
    ("directory", "ca_file"),
    ("directory", "key_file"),
    ("channels", "lan", "key_file"),
    ("channels", "lan", "old_key_file"),
    ("channels", "disk", "path"),
)
bad_path = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "",
            "/",
            "/dev/null",
            "/proc/self/mem",
            "a\0b",
            "/nonexistent/x",
            "x" * 5000,
            "/etc/shadow\n",
        ]
    ),
)


@st.composite
def mutated_config(draw: st.DrawFn, key_file: str) -> dict[str, Any]:
    """The valid configuration with 1-4 of its keys or items replaced or removed, or one of
    its file settings pointed somewhere useless."""
    data = base_config(key_file)
    if draw(st.booleans()):
        *where, key = draw(st.sampled_from(FILE_SETTINGS))
        node = data
        for step in where:
            node = node[step]
        node[key] = draw(bad_path)
    for _ in range(draw(st.integers(0, 3))):
        paths = list(_paths(data))
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent: Any = data
        for step in path[:-1]:
            parent = parent[step]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(yaml_like)
    return data


def check_parse(data: Any) -> None:
    roots = set(config.TOP_KEYS)
    if isinstance(data, Mapping):
        roots |= {str(k) for k in data}
    try:
        config.parse(copy.deepcopy(data), "/etc/ndsclust/sentinel.yaml")
    except ConfigError as e:
        assert e.source == "/etc/ndsclust/sentinel.yaml" and e.problems
        if not isinstance(data, Mapping):
            assert e.problems == ("the file must hold a mapping (key: value lines)",)
            return
        for problem in e.problems:
            assert any(
                problem.startswith(r) and problem[len(r) : len(r) + 1] in (".", "[", ":")
                for r in roots
            ), problem
            assert ": " in problem, problem


yaml_text = st.one_of(
    st.text(max_size=200).map(lambda t: t.encode("utf-8")),
    st.binary(max_size=200),
    st.builds(lambda n, c: c * n, st.integers(1, 1200), st.sampled_from([b"[", b"{a: ", b"- "])),
    st.sampled_from(
        [
            b"server: alpha\n  bad indent: 1\n",
            b"&a [*a]",
            b"a: !!python/object {}",
            b"\t\tx",
            b"%YAML 9.9\n---\n",
            b"a: &x 1\nb: *y\n",
            b"server: \xff\xfe\n",
            b"\xef\xbb\xbfserver: alpha\n",
            b"server: \x00\n",
        ]
    ),
)


def check_load(text: bytes, path: str) -> None:
    """Random YAML text through ``config.load``: a ConfigError naming the file, or a Config."""
    with open(path, "wb") as f:
        f.write(text)
    try:
        config.load(path)
    except ConfigError as e:
        assert e.problems and e.source == path


@contextmanager
def fuzz_targets() -> Iterator[Mapping[str, Target]]:
    with tempfile.TemporaryDirectory() as d:
        key = Path(d) / "cluster.key"
        key.write_bytes(b"k" * 32)
        yaml_path = os.path.join(d, "sentinel.yaml")
        yield {
            "config.parse random documents": (yaml_like, check_parse),
            "config.parse mutated configuration": (mutated_config(str(key)), check_parse),
            "config.load random YAML text": (yaml_text, lambda t: check_load(t, yaml_path)),
        }


# -- the CI run --------------------------------------------------------------------------


def test_the_base_configuration_is_valid(tmp_path: Path) -> None:
    key = tmp_path / "cluster.key"
    key.write_bytes(b"k" * 32)
    assert config.parse(base_config(str(key))).server == "alpha"


@CI
@given(yaml_like)
def test_random_documents_give_config_errors_with_paths(data: Any) -> None:
    check_parse(data)


@CI
@given(st.data())
def test_mutated_configuration_gives_config_errors_with_paths(data: st.DataObject) -> None:
    with fuzz_targets() as targets:
        strategy, check = targets["config.parse mutated configuration"]
        check(data.draw(strategy))


@CI
@given(st.data())
def test_random_yaml_text_gives_a_config_error(data: st.DataObject) -> None:
    with fuzz_targets() as targets:
        strategy, check = targets["config.load random YAML text"]
        check(data.draw(strategy))
