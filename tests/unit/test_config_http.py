"""The ``http`` section of the sentinel configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from ndsclust import config
from ndsclust.errors import ConfigError
from tests.unit.test_config import good


def test_no_section_serves_nothing(tmp_path: Path) -> None:
    assert config.parse(good(tmp_path)).http is None


def test_an_empty_section_listens_on_loopback_at_the_documented_port(tmp_path: Path) -> None:
    http = config.parse(good(tmp_path, http={})).http
    assert http is not None and http.listen == config.DEFAULT_HTTP_LISTEN == "127.0.0.1:9469"
    assert http.host_port == ("127.0.0.1", 9469) and http.max_connections == 64


def test_another_address_needs_tls_or_plain(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        config.parse(good(tmp_path, http={"listen": "198.18.0.2:9469"}))
    assert "http.listen: 198.18.0.2:9469 is not loopback" in str(e.value)
    http = config.parse(good(tmp_path, http={"listen": "198.18.0.2:9469", "plain": True})).http
    assert http is not None and http.listen == "198.18.0.2:9469"
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    http = config.parse(
        good(
            tmp_path,
            http={"listen": "[::]:9469", "cert_file": str(cert), "key_file": str(key)},
        )
    ).http
    assert http is not None and http.host_port == ("::", 9469)


def test_every_problem_of_the_section_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        config.parse(
            good(
                tmp_path,
                http={
                    "listen": "localhost",
                    "cert_file": "/etc/ndsclust/http.crt",
                    "max_connections": 0,
                    "port": 1,
                },
            )
        )
    text = str(e.value)
    for where in (
        "http.listen",
        "http.key_file",
        "http.max_connections",
        "http.port",
    ):
        assert where in text
