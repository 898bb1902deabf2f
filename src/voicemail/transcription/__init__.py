"""Local speech recognition: Whisper through faster-whisper, with hallucination guards."""

from voicemail.transcription.engine import (
    FakeCall,
    FakeTranscriber,
    Transcriber,
    Transcript,
    WhisperTranscriber,
)
from voicemail.transcription.model import (
    PACKAGED_MODEL_NAME,
    PACKAGED_MODEL_SHA256,
    ModelUnavailable,
    ensure_packaged_model,
    resolve_model_dir,
    validate_model_dir,
)
from voicemail.transcription.segments import Segment, Word

__all__ = [
    "PACKAGED_MODEL_NAME",
    "PACKAGED_MODEL_SHA256",
    "FakeCall",
    "FakeTranscriber",
    "ModelUnavailable",
    "Segment",
    "Transcriber",
    "Transcript",
    "WhisperTranscriber",
    "Word",
    "ensure_packaged_model",
    "resolve_model_dir",
    "validate_model_dir",
]
