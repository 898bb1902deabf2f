"""The SIP endpoint: a PBX, SBC or SIP trunk forwards an unanswered call to
``sip:<bot id or mailbox>@<our host>``, the caller hears the bot's greeting and a beep and
leaves a message, which reaches the live path of ``live.connection`` as a jambonz stream
does (``../shared/design/sip.md``).

``requests`` reads an INVITE's text, ``routing`` decides where it goes (mailbox, forwarding
number, caller, sessionId, digest credentials), ``endpoint`` runs PJSIP (through
``pjsua2``), ``call`` plays the greeting and the beep and ends the message, ``recording``
stores each call's audio and ``observe`` keeps the metrics, the audit entries and the
bounded log of refusals. ``greeting.wav`` is the built-in greeting.
"""
