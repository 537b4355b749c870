"""``ndsclust sentinel run`` parses with the sentinel's command alone and loads none of the
libraries only the other commands use (docs/platform.md fact 36)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ndsclust.cli import build_parser, named_command


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["sentinel", "run", "--config", "/etc/x.yaml"], "sentinel"),
        (["--config", "/etc/x.yaml", "-v", "sentinel", "run"], "sentinel"),
        (["--uri", "ldap://a", "--uri", "ldap://b", "status", "--json"], "status"),
        (["--version"], None),
        (["--help", "sentinel"], None),
        (["sentinel", "run", "-h"], None),
        ([], None),
        (["--uri"], None),  # wrong global options: the whole parser says what is wrong
        (["--connect-timeout", "soon", "sentinel", "run"], None),
    ],
)
def test_the_command_is_found_after_the_global_options(argv: list[str], named: str | None) -> None:
    assert named_command(argv) == named


def test_the_lean_parser_reads_sentinel_run_as_the_whole_one_does() -> None:
    argv = ["--config", "/etc/a.yaml", "sentinel", "run", "--daemon", "--pidfile", "/run/p"]
    lean, whole = build_parser("sentinel").parse_args(argv), build_parser().parse_args(argv)
    assert vars(lean) == vars(whole)
    assert lean.handler.__module__ == "ndsclust.cli.sentinel_cmd"


def test_the_lean_parser_knows_no_other_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser("sentinel").parse_args(["status"])
    assert info.value.code == 2 and "invalid choice: 'status'" in capsys.readouterr().err


def test_sentinel_run_loads_no_library_of_the_other_commands() -> None:
    code = (
        "import sys\n"
        "from ndsclust.cli import main\n"
        "rc = main(['sentinel', 'run', '--config', '/nonexistent/sentinel.yaml'])\n"
        "heavy = ('rich', 'cryptography', 'prometheus_client', 'argcomplete', 'importlib.metadata',"
        " 'ndsclust.web', 'ndsclust.lab', 'ndsclust.simulate', 'ndsclust.doctor', 'ndsclust.pki',"
        " 'ndsclust.sentinel.guard', 'ndsclust.ldapstore.antientropy', 'xml.etree.ElementTree')\n"
        "print(rc, sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.split("\n")[0] == "2 []", out.stdout + out.stderr
