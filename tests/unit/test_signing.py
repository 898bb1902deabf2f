import base64
import json
from datetime import UTC, datetime
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from voicemail.errors import Forbidden
from voicemail.media.signing import (
    MediaExpired,
    MediaLocation,
    decode_signature,
    encode_signature,
    sign_media_url,
    verify_media_signature,
)

KEY = b"k" * 32
ORG = "o-2b41857b-a1cb-5862-8faf-e3d99c3a0000"
BOT = "st-b110e148-7428-5295-960b-099e81670000"
FILE = "f-71f45a0e-da5a-5989-8a73-341a199b0000"
WHEN = datetime(2025, 2, 10, 13, 0, tzinfo=UTC)


def location() -> MediaLocation:
    return MediaLocation.for_recording("UAT", ORG, BOT, FILE, WHEN)


def signed(epoch: int = 0, expires: int = 2_000_000_000) -> tuple[MediaLocation, dict[str, str]]:
    url = sign_media_url(location(), key=KEY, epoch=epoch, base_url="https://h", expires=expires)
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    return location(), query


def test_path_has_kore_layout_with_day_first_folder() -> None:
    assert location().path == (
        f"/api/getMediaStream/smartassistrecording/UAT/{ORG}/{BOT}/2025/10-02-2025/{FILE}.wav"
    )


def test_signature_is_base64_of_json_string_with_dollar_padding() -> None:
    digest = bytes(range(32))
    encoded = encode_signature(digest)
    assert "=" not in encoded
    inner = json.loads(base64.b64decode(encoded.replace("$", "=")))
    assert base64.b64decode(inner) == digest
    assert decode_signature(encoded) == digest


def test_kore_sample_signature_shape_decodes() -> None:
    # From Kore's published sample, with its "xxxx" mask replaced by a plausible tail.
    sample_inner = base64.b64encode(
        json.dumps("WXzK4tSZpkVn2bpjM5NJ/FMQkVeXTBorzQLyY6H7dqc=").encode()
    )
    assert len(decode_signature(sample_inner.decode().replace("=", "$"))) == 32


def test_url_query_escapes_dollar() -> None:
    url = sign_media_url(location(), key=KEY, epoch=0, base_url="https://h", expires=1)
    raw_s = urlsplit(url).query.split("s=")[1]
    assert "$" not in raw_s and "=" not in raw_s
    assert "%24" in raw_s or raw_s == unquote(raw_s)


def test_valid_signature_verifies() -> None:
    loc, q = signed()
    verify_media_signature(loc, key=KEY, epoch=0, e=q["e"], n=q["n"], s=q["s"], now=1)


@pytest.mark.parametrize("field", ["e", "n"])
def test_changed_expiry_or_nonce_is_refused(field: str) -> None:
    loc, q = signed()
    q[field] = str(int(q[field]) + 1)
    with pytest.raises(Forbidden, match="signature"):
        verify_media_signature(loc, key=KEY, epoch=0, e=q["e"], n=q["n"], s=q["s"], now=1)


def test_changed_path_is_refused() -> None:
    _, q = signed()
    other = MediaLocation.for_recording("UAT", ORG, BOT, FILE.replace("0000", "0001"), WHEN)
    with pytest.raises(Forbidden):
        verify_media_signature(other, key=KEY, epoch=0, e=q["e"], n=q["n"], s=q["s"], now=1)


def test_other_key_or_epoch_is_refused() -> None:
    loc, q = signed()
    with pytest.raises(Forbidden):
        verify_media_signature(loc, key=b"x" * 32, epoch=0, e=q["e"], n=q["n"], s=q["s"], now=1)
    with pytest.raises(Forbidden):
        verify_media_signature(loc, key=KEY, epoch=1, e=q["e"], n=q["n"], s=q["s"], now=1)


@pytest.mark.parametrize("bad", ["", "$$$$", "not base64!", base64.b64encode(b"123").decode()])
def test_garbage_signature_is_refused(bad: str) -> None:
    loc, q = signed()
    with pytest.raises(Forbidden):
        verify_media_signature(loc, key=KEY, epoch=0, e=q["e"], n=q["n"], s=bad, now=1)


def test_expired_is_refused_with_its_own_message() -> None:
    loc, q = signed(expires=1000)
    with pytest.raises(MediaExpired, match="expired"):
        verify_media_signature(loc, key=KEY, epoch=0, e=q["e"], n=q["n"], s=q["s"], now=1001)


@pytest.mark.parametrize(
    ("segment", "value"),
    [
        ("org", "../../etc"),
        ("bot", "st-..%2f"),
        ("file", "f-71f45a0e-da5a-5989-8a73-341a199b0000.wav/../x"),
        ("day", "2025-02-10"),
        ("env", "UAT/.."),
    ],
)
def test_parse_rejects_malformed_segments(segment: str, value: str) -> None:
    parts = {
        "env": "UAT",
        "org": ORG,
        "bot": BOT,
        "year": "2025",
        "day": "10-02-2025",
        "file": f"{FILE}.wav",
    }
    parts[segment] = value
    with pytest.raises(Forbidden):
        MediaLocation.parse(**parts)
