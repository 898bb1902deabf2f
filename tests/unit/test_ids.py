import re

from voicemail import ids


def test_prefixed_uuid_shape() -> None:
    for prefix in (ids.ACCOUNT, ids.BOT, ids.APP, ids.FILE, ids.MESSAGE, ids.COMPONENT):
        value = ids.new_id(prefix)
        assert ids.is_id(value, prefix)
        assert not ids.is_id(value, "zz")
    assert not ids.is_id("st-not-a-uuid", ids.BOT)


def test_session_ids_are_24_hex_and_unique() -> None:
    values = {ids.new_session_id() for _ in range(200)}
    assert len(values) == 200
    assert all(re.fullmatch(r"[0-9a-f]{24}", v) for v in values)


def test_normalize_session_id() -> None:
    assert ids.normalize_session_id(" 67AA38026E199C8F470E1234 ") == "67aa38026e199c8f470e1234"
    for bad in ("", "67aa", "g" * 24, "67aa38026e199c8f470e12345", "../../../../etc/passwd"):
        assert ids.normalize_session_id(bad) is None


def test_caller_user_id_is_stable_per_number() -> None:
    a = ids.caller_user_id("+1 (555) 010-0000", "a" * 24)
    b = ids.caller_user_id("+15550100000", "b" * 24)
    assert a == b and ids.is_id(a, ids.USER)
    assert ids.caller_user_id("+15550100001", "a" * 24) != a


def test_caller_user_id_without_number_is_per_session() -> None:
    assert ids.caller_user_id(None, "a" * 24) != ids.caller_user_id(None, "b" * 24)
    assert ids.caller_user_id("", "a" * 24) == ids.caller_user_id(None, "a" * 24)
