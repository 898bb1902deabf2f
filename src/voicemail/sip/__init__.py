"""The SIP endpoint: a PBX, SBC or SIP trunk forwards an unanswered call to
``sip:<bot id>@<our host>``, the caller hears the bot's greeting and a beep and leaves a
message, which reaches the live path of ``live.connection`` as a jambonz stream does
(``../shared/design/sip.md``).

``requests`` reads what a call asks for from its INVITE, ``endpoint`` runs PJSIP (through
``pjsua2``), ``call`` plays the greeting and the beep and ends the message, and
``recording`` stores each call's audio. ``greeting.wav`` is the built-in greeting.
"""
