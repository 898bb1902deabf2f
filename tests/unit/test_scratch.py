import os
import time
from pathlib import Path

from voicemail.runtime import sweep_scratch


def test_sweep_removes_only_stale_leftovers(tmp_path: Path) -> None:
    stale_dir = tmp_path / "old-upload"
    stale_dir.mkdir()
    (stale_dir / "upload").write_bytes(b"x")
    stale_file = tmp_path / ".partial-1.wav"
    stale_file.write_bytes(b"x")
    fresh = tmp_path / "in-progress"
    fresh.mkdir()
    hour_ago = time.time() - 7200
    for path in (stale_dir, stale_file):
        os.utime(path, (hour_ago, hour_ago))

    assert sweep_scratch(tmp_path, older_than=3600) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in-progress"]
    assert sweep_scratch(tmp_path / "missing") == 0
