"""Benchmark the transcription engine alone on the shared speech corpus.

    python bench/engine.py [--set telephone|original|both] [--beam N [N ...]]
                           [--out bench/results/engine.json]

For every clip of the manifest (``$VOICEMAIL_TEST_AUDIO_DIR`` or ``../shared/audio``) it
runs ``WhisperTranscriber`` and records the clip's WER, audio seconds and processing
seconds (real-time factor = processing / audio); per set the corpus-level WER (all errors
over all reference words) and the total real-time factor; and the model-load time and
peak resident memory of the process. WER normalisation: see ``tests/helpers/clips.py``.
Results go to a JSON file and a Markdown summary to stdout.

With several beam sizes (``--beam 1 5``) one engine per beam is loaded and every clip is
transcribed by each in turn (the order alternating clip by clip), so machine noise falls
on all of them; the summary then adds their ratios. (Peak memory is then that of all the
engines together.)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # for tests.helpers (and src when not installed)
if str(REPO_ROOT / "src") not in sys.path:
    sys.path.append(str(REPO_ROOT / "src"))

from bench.common import add_beams_argument, interleaved  # noqa: E402
from tests.helpers.clips import (  # noqa: E402
    SETS,
    Clip,
    audio_dir,
    corpus_wer,
    missing_audio_reason,
    read_manifest,
    wer,
)

from voicemail.transcription import WhisperTranscriber, resolve_model_dir  # noqa: E402


@dataclass
class ClipResult:
    beam: int
    set: str
    clip: str
    group: str
    audio_seconds: float
    processing_seconds: float
    rtf: float
    wer: float
    language: str | None
    language_probability: float | None
    no_speech: bool
    dropped_segments: list[str]  # hallucination-guard reasons, one per dropped segment
    reference: str
    hypothesis: str


class DroppedSegments(logging.Handler):
    """Collects the engine's "transcript segment dropped" records (their reasons)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.reasons: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "transcript segment dropped":
            self.reasons.append(str(getattr(record, "reason", "?")))


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "voicemail"


def run_set(
    engines: dict[int, WhisperTranscriber], clips: list[Clip], audio_set: str
) -> list[ClipResult]:
    """Every clip of ``audio_set`` through every engine (keyed by beam), interleaved."""
    results: list[ClipResult] = []
    dropped = DroppedSegments()
    engine_log = logging.getLogger("voicemail.transcription.engine")
    engine_log.addHandler(dropped)
    engine_log.setLevel(logging.INFO)
    for index, clip in enumerate(clips, 1):
        for beam in interleaved(index, list(engines)):
            dropped.reasons = []
            started = time.perf_counter()
            transcript = engines[beam].transcribe(clip.path(audio_set))
            elapsed = time.perf_counter() - started
            clip_wer = wer(clip.reference, transcript.text)
            results.append(
                ClipResult(
                    beam=beam,
                    set=audio_set,
                    clip=clip.name,
                    group=clip.group,
                    audio_seconds=round(transcript.duration_seconds, 3),
                    processing_seconds=round(elapsed, 3),
                    rtf=round(elapsed / transcript.duration_seconds, 4),
                    wer=round(clip_wer, 4),
                    language=transcript.language,
                    language_probability=(
                        round(transcript.language_probability, 4)
                        if transcript.language_probability is not None
                        else None
                    ),
                    no_speech=transcript.no_speech,
                    dropped_segments=list(dropped.reasons),
                    reference=clip.reference,
                    hypothesis=transcript.text,
                )
            )
            print(
                f"[{audio_set} {index:>2}/{len(clips)} beam {beam}] {clip.name:<28} "
                f"{transcript.duration_seconds:6.2f}s audio {elapsed:6.2f}s  WER {clip_wer:.3f}",
                file=sys.stderr,
                flush=True,
            )
    engine_log.removeHandler(dropped)
    return results


def summarise(results: list[ClipResult], clips: list[Clip]) -> dict[str, Any]:
    by_name = {clip.name: clip for clip in clips}
    audio = sum(r.audio_seconds for r in results)
    processing = sum(r.processing_seconds for r in results)
    return {
        "clips": len(results),
        "corpus_wer": round(
            corpus_wer(
                [by_name[r.clip].reference for r in results], [r.hypothesis for r in results]
            ),
            4,
        ),
        "mean_clip_wer": round(sum(r.wer for r in results) / len(results), 4),
        "audio_seconds": round(audio, 2),
        "processing_seconds": round(processing, 2),
        "rtf": round(processing / audio, 4),
        "not_english": sum(1 for r in results if r.language != "en"),
        "no_speech": sum(1 for r in results if r.no_speech),
        "dropped_segments": sum(len(r.dropped_segments) for r in results),
    }


def compare(
    summaries: dict[int, dict[str, Any]], results: list[ClipResult]
) -> dict[str, dict[str, Any]]:
    """Per set, each beam against the first: corpus WER change and processing-time ratio,
    of the totals and the median of the clips' own ratios (each clip's two runs are next to
    each other, so a burst of other work on the machine moves the totals more)."""
    seconds = {(r.beam, r.set, r.clip): r.processing_seconds for r in results}
    first, *others = list(summaries)
    comparison: dict[str, dict[str, Any]] = {}
    for name, base in summaries[first].items():
        comparison[name] = {
            f"beam {other} vs {first}": {
                "corpus_wer_change": round(
                    summaries[other][name]["corpus_wer"] - base["corpus_wer"], 4
                ),
                "corpus_wer_relative_change": (
                    round(summaries[other][name]["corpus_wer"] / base["corpus_wer"] - 1, 4)
                    if base["corpus_wer"]
                    else None
                ),
                "processing_ratio": round(
                    summaries[other][name]["processing_seconds"] / base["processing_seconds"], 4
                ),
                "processing_ratio_median_clip": round(
                    statistics.median(
                        seconds[(other, set_, clip)] / seconds[(first, set_, clip)]
                        for (beam, set_, clip) in seconds
                        if beam == first and set_ == name
                    ),
                    4,
                ),
            }
            for other in others
        }
    return comparison


def markdown(report: dict[str, Any]) -> str:
    config = report["config"]
    beams = "/".join(str(beam) for beam in config["beam_sizes"])
    lines = [
        f"## Engine benchmark: {config['model']}, beam {beams}, "
        f"{config['compute_type']} on {config['device']} ({config['cpu_threads']} threads)",
        "",
        f"Model load: {report['model_load_seconds']:.2f} s; "
        f"peak RSS: {report['peak_rss_mib']:.0f} MiB "
        f"(after load {report['rss_after_load_mib']:.0f} MiB)",
        "",
        "| beam | set | clips | corpus WER | mean clip WER | audio s | processing s | RTF "
        "| not en | no speech | guard drops |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for beam, sets in report["beams"].items():
        for name, s in sets.items():
            lines.append(
                f"| {beam} | {name} | {s['clips']} | {s['corpus_wer']:.3f} "
                f"| {s['mean_clip_wer']:.3f} | {s['audio_seconds']:.1f} "
                f"| {s['processing_seconds']:.1f} | {s['rtf']:.3f} "
                f"| {s['not_english']} | {s['no_speech']} | {s['dropped_segments']} |"
            )
    if report.get("comparison"):
        lines += [
            "",
            "| set | comparison | corpus WER change | relative | processing time ratio "
            "(total) | (median clip) |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for name, pairs in report["comparison"].items():
            for pair, c in pairs.items():
                relative = c["corpus_wer_relative_change"]
                lines.append(
                    f"| {name} | {pair} | {c['corpus_wer_change'] * 100:+.2f} points "
                    f"| {'–' if relative is None else f'{relative:+.1%}'} "
                    f"| {c['processing_ratio']:.3f} | {c['processing_ratio_median_clip']:.3f} |"
                )
    for beam in report["beams"]:
        for name in report["beams"][beam]:
            mine = (r for r in report["clips"] if r["set"] == name and str(r["beam"]) == beam)
            worst = sorted(mine, key=lambda r: -r["wer"])[:5]
            lines += [
                "",
                f"Worst clips, {name}, beam {beam}:",
                "",
                "| clip | WER | hypothesis |",
                "|---|---:|---|",
            ]
            lines += [
                f"| {r['clip']} | {r['wer']:.3f} | {r['hypothesis'].replace('|', '/')} |"
                for r in worst
            ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", choices=[*SETS, "both"], default="both", dest="audio_set")
    add_beams_argument(parser)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench/results/engine.json")
    parser.add_argument("--model", default=None, help="a CTranslate2 Whisper folder")
    parser.add_argument("--cache-dir", type=Path, default=default_cache_dir())
    parser.add_argument("--threads", type=int, default=0, help="CPU threads; 0: all")
    parser.add_argument("--compute-type", default="int8")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--limit", type=int, default=0, help="only the first N clips")
    args = parser.parse_args(argv)

    directory = audio_dir()
    if directory is None:
        print(missing_audio_reason(), file=sys.stderr)
        return 2
    clips = read_manifest(directory)
    if args.limit:
        clips = clips[: args.limit]
    sets = list(SETS) if args.audio_set == "both" else [args.audio_set]

    started = time.perf_counter()
    model_dir = resolve_model_dir(args.model, args.cache_dir)
    resolve_seconds = time.perf_counter() - started
    engines = {
        beam: WhisperTranscriber(
            model_dir,
            device=args.device,
            compute_type=args.compute_type,
            cpu_threads=args.threads,
            beam_size=beam,
        )
        for beam in dict.fromkeys(args.beams)
    }
    started = time.perf_counter()
    for engine in engines.values():
        engine.load()
    load_seconds = (time.perf_counter() - started) / len(engines)
    rss_after_load = peak_rss_mib()

    results: list[ClipResult] = []
    summaries: dict[int, dict[str, Any]] = {beam: {} for beam in engines}
    for audio_set in sets:
        set_results = run_set(engines, clips, audio_set)
        results += set_results
        for beam in engines:
            mine = [r for r in set_results if r.beam == beam]
            summaries[beam][audio_set] = summarise(mine, clips)

    import ctranslate2
    import faster_whisper

    report: dict[str, Any] = {
        "config": {
            "model": model_dir.name,
            "beam_sizes": list(engines),
            "device": args.device,
            "compute_type": args.compute_type,
            "cpu_threads": next(iter(engines.values())).cpu_threads,
            "sets": sets,
            "corpus": str(directory),
            "wer_normalisation": "tests/helpers/clips.py normalise_for_wer",
        },
        "environment": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "faster_whisper": faster_whisper.__version__,
            "ctranslate2": ctranslate2.__version__,
        },
        "model_resolve_seconds": round(resolve_seconds, 3),
        "model_load_seconds": round(load_seconds, 3),
        "rss_after_load_mib": round(rss_after_load, 1),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "beams": {str(beam): sets for beam, sets in summaries.items()},
        "comparison": compare(summaries, results) if len(engines) > 1 else {},
        "clips": [asdict(r) for r in results],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(markdown(report))
    print(f"\nResults: {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
