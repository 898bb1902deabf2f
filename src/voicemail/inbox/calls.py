"""Click-to-call: a caller's number as a link (``tel:`` by default, or the URI template of
``VOICEMAIL_INBOX_CALL_URI_TEMPLATE`` for a softphone or a CTI)."""

from __future__ import annotations

import re
from urllib.parse import quote

import phonenumbers
from jinja2 import pass_context
from jinja2.runtime import Context

# A SIP caller id: its user part is the number ("sip:+14155550134@pbx;user=phone").
_SIP_USER = re.compile(r"^(?:sips?|tel):([^@;>]+)", re.IGNORECASE)
_DIALABLE = re.compile(r"^\+?[0-9]{3,20}$")


def dialable(caller: str | None) -> str | None:
    """The number to dial for a caller id or a spoken call-back number: E.164 when it reads
    as a valid international one ("+14155550134"), else its digits (with a leading +, as
    given); None when there is no number in it ("anonymous", a name)."""
    if not caller:
        return None
    text = caller.strip().strip("<>")
    sip = _SIP_USER.match(text)
    if sip:
        text = sip.group(1)
    compact = re.sub(r"[\s().\-/]", "", text)
    if compact.startswith("00"):
        compact = "+" + compact[2:]
    if not _DIALABLE.match(compact):
        return None
    if compact.startswith("+"):
        try:
            parsed = phonenumbers.parse(compact, None)
        except phonenumbers.NumberParseException:
            return compact
        if phonenumbers.is_valid_number(parsed):
            e164: str = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
            return e164
    return compact


def call_uri(template: str, number: str | None) -> str | None:
    """The link for a number, or None when it has none. The template is checked at start
    (``settings.check_call_uri_template``: a safe scheme); the number goes in URL-encoded
    (only "+" kept as it is, as E.164 and ``tel:`` write it)."""
    found = dialable(number)
    if found is None:
        return None
    return template.format(number=quote(found, safe="+"))


def same_number(first: str | None, second: str | None) -> bool:
    """Whether two numbers dial the same (a spoken call-back number and the caller id)."""
    a, b = dialable(first), dialable(second)
    if a is None or b is None:
        return False
    # A national caller id against the E.164 spoken number: compare their last digits.
    return a == b or (len(a) >= 7 and len(b) >= 7 and a[-9:].lstrip("+") == b[-9:].lstrip("+"))


@pass_context
def call_link(context: Context, number: str | None) -> str | None:
    """Jinja filter: ``{{ caller | call_uri }}`` with the app's template setting."""
    template: str = context["request"].app.state.runtime.settings.inbox_call_uri_template
    return call_uri(template, number)
