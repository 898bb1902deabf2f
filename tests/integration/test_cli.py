"""The ``voicemail`` command on a data folder: its logic run in this process, and a real
subprocess for what only a process shows (start-up, the entry point, one deposit and fetch)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import jwt
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from tests.helpers.cli import invoke_cli, ok_json, one_line_error, run_cli
from voicemail.app import create_app
from voicemail.bots import service as bots
from voicemail.db.migrate import upgrade
from voicemail.db.models import App, Voicemail
from voicemail.runtime import Runtime
from voicemail.settings import Settings
from voicemail.transcription import FakeTranscriber

SIGNING_KEY = "cli-test-signing-key-" + "k" * 32
PUBLIC_URL = "https://voicemail.example.com"
SESSION = "67aa38026e199c8f470e00c1"
BOT_ID_RE = re.compile(r"st-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
CLIENT_ID_RE = re.compile(r"cs-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
FETCH = "SmartAssist Voicemail"
DEPOSIT = "Voicemail Deposit"
DELETE = "Delete Recordings"
# Not loaded to show the help: together they take about a second to import.
HEAVY_MODULES = ("sqlalchemy", "argon2", "numpy", "av", "faster_whisper", "ctranslate2")

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def data_settings(tmp_path: Path) -> Settings:
    """The settings of an install whose data folder is tmp_path."""
    return Settings(
        _env_file=None, data_dir=tmp_path, signing_key=SIGNING_KEY, public_url=PUBLIC_URL
    )


def _runner(run: Cli, settings: Settings, tmp_path: Path) -> Cli:
    def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        terminal = {"VOICEMAIL_PUBLIC_URL": PUBLIC_URL, "COLUMNS": "80"}
        return run(settings, *args, env=terminal | (env or {}), cwd=tmp_path)

    return cli


@pytest.fixture
def cli(data_settings: Settings, tmp_path: Path) -> Cli:
    """``voicemail ARGS`` in this process, in tmp_path, with the data folder there, in an
    80-column terminal; extra env overrides."""
    return _runner(invoke_cli, data_settings, tmp_path)


@pytest.fixture
def process(data_settings: Settings, tmp_path: Path) -> Cli:
    """The same, run as a user runs it: ``python -m voicemail`` in a subprocess."""
    return _runner(run_cli, data_settings, tmp_path)


@pytest.fixture
def same_runtime(data_settings: Settings) -> Iterator[Runtime]:
    """A runtime in this process on the data folder the command uses."""
    runtime = Runtime.build(data_settings, transcriber=FakeTranscriber())
    upgrade(data_settings.resolved_database_url)
    yield runtime
    runtime.close()


@pytest.fixture
def api(same_runtime: Runtime) -> Iterator[TestClient]:
    """The HTTP API on the data folder the command uses."""
    app = create_app(same_runtime.settings, runtime=same_runtime, run_worker=False)
    with TestClient(app) as client:
        yield client


def test_help_and_version_start_without_the_heavy_modules(process: Cli) -> None:
    helped = process("--help")
    assert helped.returncode == 0, helped.stderr
    assert "serve" in helped.stdout and "webhooks" in helped.stdout
    version = process("--version")
    assert version.returncode == 0 and version.stdout.startswith("voicemail ")

    shown = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys\n"
            "from voicemail.cli import main\n"
            "sys.argv = ['voicemail', '--help']\n"
            "try:\n    main()\n"
            "except SystemExit:\n    pass\n"
            "print(' '.join(sys.modules), file=sys.stderr)",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    loaded = {name.partition(".")[0] for name in shown.stderr.split()}
    assert not loaded & set(HEAVY_MODULES)


def test_bots_and_apps_admin(cli: Cli, tmp_path: Path) -> None:
    bot = ok_json(cli("bots", "create", "Support line", "--json"))
    assert BOT_ID_RE.fullmatch(bot["botId"]), bot
    assert bot["name"] == "Support line"
    assert (tmp_path / "voicemail.db").is_file()  # under VOICEMAIL_DATA_DIR
    bot_id = bot["botId"]

    listed = ok_json(cli("bots", "list", "--json"))
    defaults = {
        "retentionDays": 90,
        "languages": [],
        "vocabulary": [],
        "redact": [],
        "region": None,
        "mailboxes": [],
        "greeting": "default",
        "maxMessageSeconds": 180,
    }
    assert listed == {"bots": [{**bot, **defaults}]}

    human = cli("bots", "list")
    assert human.returncode == 0, human.stderr
    assert "Support line" in human.stdout and "┃ botId" in human.stdout
    assert bot_id in human.stdout  # whole, though the terminal is only 80 columns wide

    created = ok_json(
        cli(
            "apps", "create", "CRM", "--bot", bot_id, "--scope", FETCH, "--scope", DEPOSIT, "--json"
        )
    )
    assert set(created) == {"clientId", "clientSecret"}
    assert CLIENT_ID_RE.fullmatch(created["clientId"])
    client_id, secret = created["clientId"], created["clientSecret"]
    assert len(secret) >= 32

    apps = ok_json(cli("apps", "list", "--json"))
    assert apps == {
        "apps": [
            {
                "clientId": client_id,
                "name": "CRM",
                "enforceJti": False,
                "scopes": [
                    {"botId": bot_id, "scope": FETCH},
                    {"botId": bot_id, "scope": DEPOSIT},
                ],
            }
        ]
    }

    granted = ok_json(cli("apps", "grant", client_id, "--bot", bot_id, "--scope", DELETE, "--json"))
    assert {g["scope"] for g in granted["scopes"]} == {FETCH, DEPOSIT, DELETE}
    revoked = ok_json(
        cli("apps", "revoke", client_id, "--bot", bot_id, "--scope", DEPOSIT, "--json")
    )
    assert {g["scope"] for g in revoked["scopes"]} == {FETCH, DELETE}

    assert ok_json(cli("apps", "enforce-jti", client_id, "--on", "--json"))["enforceJti"] is True
    final = ok_json(cli("apps", "enforce-jti", client_id, "--off", "--json"))
    assert final["enforceJti"] is False
    assert {g["scope"] for g in final["scopes"]} == {FETCH, DELETE}

    human_apps = cli("apps", "list")
    assert human_apps.returncode == 0, human_apps.stderr
    assert client_id in human_apps.stdout and "CRM" in human_apps.stdout
    assert secret not in human_apps.stdout


def test_token_is_accepted_by_the_api(cli: Cli, api: TestClient) -> None:
    bot_id = ok_json(cli("bots", "create", "Sales", "--json"))["botId"]
    created = ok_json(cli("apps", "create", "CRM", "--bot", bot_id, "--scope", FETCH, "--json"))
    client_id, secret = created["clientId"], created["clientSecret"]

    printed = cli("apps", "token", "--client-id", client_id, "--client-secret", secret)
    assert printed.returncode == 0, printed.stderr
    lines = printed.stdout.splitlines()
    assert len(lines) == 1
    token = lines[0]
    assert jwt.decode(token, secret, algorithms=["HS256"]) == {"appId": client_id}

    url = f"/api/public/bot/{bot_id}/voicemail"
    accepted = api.get(url, params={"sessionId": SESSION}, headers={"auth": token})
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["status"] == "media_unavailable"
    forged = jwt.encode({"appId": client_id}, "not-the-secret-" + "x" * 32, "HS256")
    assert api.get(url, params={"sessionId": SESSION}, headers={"auth": forged}).status_code == 401

    # After rotate-secret the printed token stops working; one signed with the new secret works.
    rotated = ok_json(cli("apps", "rotate-secret", client_id, "--json"))
    assert rotated["clientId"] == client_id
    new_secret = rotated["clientSecret"]
    assert new_secret != secret and len(new_secret) >= 32
    assert api.get(url, params={"sessionId": SESSION}, headers={"auth": token}).status_code == 401
    renewed = jwt.encode({"appId": client_id}, new_secret, "HS256")
    assert api.get(url, params={"sessionId": SESSION}, headers={"auth": renewed}).status_code == 200


def test_deposit_fetch_and_media(cli: Cli, process: Cli, speech_clip: Path) -> None:
    bot_id = ok_json(cli("bots", "create", "Support", "--json"))["botId"]

    # A deposit and a fetch as a user runs them, start to end; the rest in this process.
    deposited = ok_json(
        process("deposit", str(speech_clip), "--bot", bot_id, "--session", SESSION, "--json")
    )
    assert deposited == {
        "sessionId": SESSION,
        "fileName": f"voicemail_{SESSION}.wav",
        "durationSeconds": pytest.approx(4.6, abs=0.2),
        "duplicate": False,
    }

    body = ok_json(process("fetch", "--bot", bot_id, "--session", SESSION, "--json"))
    assert body["status"] == "success"
    assert body["transcriptionStatus"] == "pending"  # no worker ran
    assert body["transcriptions"] == []
    [recording] = body["voicemail_recording"]
    assert body["voicemail recording"] == [recording]
    assert recording["fileName"] == f"voicemail_{SESSION}.wav"
    assert recording["fileUrl"].startswith(f"{PUBLIC_URL}/api/getMediaStream/")

    again = ok_json(
        cli("deposit", str(speech_clip), "--bot", bot_id, "--session", SESSION, "--json")
    )
    assert again["duplicate"] is True and again["fileName"] == deposited["fileName"]

    revoked = ok_json(cli("media", "revoke-all", "--json"))
    assert revoked["revoked"] is True and isinstance(revoked["epoch"], int)
    after = ok_json(cli("fetch", "--bot", bot_id, "--session", SESSION, "--json"))
    [new_recording] = after["voicemail_recording"]  # still one: the duplicate added nothing
    assert new_recording["fileUrl"] != recording["fileUrl"]  # re-signed under the new epoch

    upgraded = cli("db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert "up to date" in upgraded.stdout


def test_errors_are_one_line_without_traceback(
    cli: Cli, same_runtime: Runtime, tmp_path: Path, speech_clip: Path
) -> None:
    with same_runtime.sessions.begin() as db:
        bot_id = bots.create_bot(db, name="Support").id
    text = tmp_path / "notes.txt"
    text.write_text("this is not a recording\n" * 20)

    calls: dict[str, tuple[tuple[str, ...], dict[str, str] | None]] = {
        "unknown": (("deposit", str(speech_clip), "--bot", "st-nope"), None),
        "markup": (("fetch", "--bot", "st-[/x]", "--session", SESSION), None),
        "scope": (("apps", "create", "CRM", "--bot", bot_id, "--scope", "Everything"), None),
        "session": (("fetch", "--bot", bot_id, "--session", "xyz"), None),
        "audio": (("deposit", str(text), "--bot", bot_id), None),
        "rate": (("bots", "list"), {"VOICEMAIL_RATE_LIMIT_PER_MINUTE": "0"}),
        "url": (("bots", "list"), {"VOICEMAIL_PUBLIC_URL": "ftp://x"}),
        "missing": (("deposit", str(tmp_path / "nothere.wav"), "--bot", bot_id), None),
    }
    results = {name: cli(*args, env=env) for name, (args, env) in calls.items()}

    assert "No bot st-nope" in one_line_error(results["unknown"])
    # User input that looks like console markup is printed as given, not interpreted.
    assert "st-[/x]" in one_line_error(results["markup"])

    scope = one_line_error(results["scope"])
    assert "Unknown scope 'Everything'" in scope and FETCH in scope and DELETE in scope

    session = one_line_error(results["session"])
    assert "sessionId must be 24 hexadecimal characters" in session

    assert "could not be decoded" in one_line_error(results["audio"])

    rate = one_line_error(results["rate"])
    assert "VOICEMAIL_RATE_LIMIT_PER_MINUTE" in rate
    url = one_line_error(results["url"])
    assert "VOICEMAIL_PUBLIC_URL" in url and "http://" in url

    missing = results["missing"]
    assert missing.returncode == 2
    assert "Traceback" not in missing.stderr and "does not exist" in missing.stderr
    assert missing.stdout == ""

    # None of the failures left a recording behind.
    with same_runtime.sessions() as db:
        assert db.scalar(select(func.count()).select_from(Voicemail)) == 0
        assert db.scalar(select(func.count()).select_from(App)) == 0
