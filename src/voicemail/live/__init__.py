"""Live capture: a call's audio as it arrives, stored in parts and transcribed while the
caller speaks, then finalized into an ordinary voicemail.

- ``socket``: the jambonz ``listen`` WebSocket route and its connections.
- ``calls``: a live call's persistence (parts, heartbeat) and its finalizing.
- ``transcription``: transcription in chunks while the audio arrives.
- ``gateway``: a stand-in voice gateway client (``voicemail stream-test``, tests, benchmarks).
"""
