"""Available CPUs follow the container's limits (affinity mask, cgroup v1/v2 CPU quota), not
the host's core count; the cgroup file system is faked in a folder, the affinity patched."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from voicemail import cpus
from voicemail.transcription.engine import WhisperTranscriber

HOST_CORES = 64


@pytest.fixture(autouse=True)
def host_of_64_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(HOST_CORES)))
    monkeypatch.setattr(os, "cpu_count", lambda: HOST_CORES)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def available(root: Path) -> int:
    return cpus.available_cpus(cgroup_root=root / "sys", proc_self_cgroup=root / "cgroup")


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [
        ("200000 100000\n", 2),  # docker --cpus 2
        ("150000 100000\n", 1),  # 1.5 CPUs: one thread runs unthrottled
        ("50000 100000\n", 1),  # never below one
        ("400000 50000\n", 8),  # another period
        ("max 100000\n", HOST_CORES),  # no limit
    ],
)
def test_cgroup_v2_quota_in_its_own_namespace(tmp_path: Path, cpu_max: str, expected: int) -> None:
    write(tmp_path / "cgroup", "0::/\n")
    write(tmp_path / "sys" / "cpu.max", cpu_max)
    assert available(tmp_path) == expected


def test_cgroup_v2_the_tightest_limit_above_the_process_counts(tmp_path: Path) -> None:
    # A systemd service in a slice: the slice's limit binds, though the service sets none.
    write(tmp_path / "cgroup", "0::/voicemail.slice/voicemail-worker@1.service\n")
    write(tmp_path / "sys" / "voicemail.slice" / "cpu.max", "300000 100000\n")
    write(tmp_path / "sys" / "voicemail.slice" / "voicemail-worker@1.service" / "cpu.max", "max\n")
    assert available(tmp_path) == 3
    write(tmp_path / "sys" / "voicemail.slice" / "voicemail-worker@1.service" / "cpu.max", "1 1")
    assert available(tmp_path) == 1


def test_cgroup_v2_host_path_not_visible_in_the_container(tmp_path: Path) -> None:
    # No cgroup namespace: /proc/self/cgroup names the host's path; the mount is our own.
    write(tmp_path / "cgroup", "0::/kubepods/burstable/pod1234/abcdef\n")
    write(tmp_path / "sys" / "cpu.max", "200000 100000\n")
    assert available(tmp_path) == 2


@pytest.mark.parametrize("mount", ["cpu,cpuacct", "cpu"])
def test_cgroup_v1_quota(tmp_path: Path, mount: str) -> None:
    lines = ["12:memory:/docker/abc", "4:cpu,cpuacct:/docker/abc", "1:name=systemd:/"]
    write(tmp_path / "cgroup", "\n".join(lines) + "\n")
    write(tmp_path / "sys" / mount / "docker" / "abc" / "cpu.cfs_quota_us", "400000\n")
    write(tmp_path / "sys" / mount / "docker" / "abc" / "cpu.cfs_period_us", "100000\n")
    assert available(tmp_path) == 4
    write(tmp_path / "sys" / mount / "docker" / "abc" / "cpu.cfs_quota_us", "-1\n")
    assert available(tmp_path) == HOST_CORES


def test_the_affinity_mask_when_it_is_narrower(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {2, 3, 5})
    write(tmp_path / "cgroup", "0::/\n")
    write(tmp_path / "sys" / "cpu.max", "800000 100000\n")
    assert available(tmp_path) == 3


@pytest.mark.parametrize("cpu_max", ["", "garbage", "0 100000", "-5 100000", "100 0"])
def test_unreadable_or_odd_limits_mean_no_limit(tmp_path: Path, cpu_max: str) -> None:
    write(tmp_path / "cgroup", "0::/\n")
    write(tmp_path / "sys" / "cpu.max", cpu_max)
    assert available(tmp_path) == HOST_CORES


def test_no_cgroup_file_system(tmp_path: Path) -> None:
    assert available(tmp_path) == HOST_CORES  # neither /proc/self/cgroup nor the mount


def test_model_threads_follow_the_quota(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A worker limited to 2 CPUs on a 64-core node starts 2 model threads, not 64.
    write(tmp_path / "cgroup", "0::/\n")
    write(tmp_path / "sys" / "cpu.max", "200000 100000\n")
    monkeypatch.setattr(cpus, "CGROUP_ROOT", tmp_path / "sys")
    monkeypatch.setattr(cpus, "PROC_SELF_CGROUP", tmp_path / "cgroup")
    assert WhisperTranscriber(Path("unused"), cpu_threads=0).cpu_threads == 2
    assert WhisperTranscriber(Path("unused"), cpu_threads=0, num_workers=2).cpu_threads == 1
    assert WhisperTranscriber(Path("unused"), cpu_threads=5).cpu_threads == 5  # as configured
