"""How many CPUs this process may really use: the one answer every thread count follows.

``os.cpu_count()`` counts the host's CPUs. A container limited to 2 CPUs on a 64-core node
would then start 64 model threads, which the kernel throttles to 2 CPUs' worth of time:
slower than 2 threads, and unfair to its neighbours. Two limits narrow it:

- the affinity mask (``os.sched_getaffinity``): ``docker --cpuset-cpus``, ``taskset``,
  Kubernetes' static CPU manager;
- the CFS bandwidth quota of the process's cgroup and of every cgroup above it:
  ``cpu.max`` ("quota period", or "max" for none) on cgroup v2, ``cpu.cfs_quota_us`` and
  ``cpu.cfs_period_us`` (-1 for none) on cgroup v1: ``docker --cpus``, Kubernetes'
  ``resources.limits.cpu``.

The answer is the smaller of the two, a fractional quota rounded down (1.5 CPUs: 1 thread,
which runs unthrottled), and never below 1. The cgroup is found through
``/proc/self/cgroup``; in a container with its own cgroup namespace its path is ``/``, and
the limits are those of ``/sys/fs/cgroup`` itself. Both locations are parameters, for tests.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")

# Reads the quota (in CPUs) set on one cgroup folder; None when it sets none.
_QuotaReader = Callable[[Path], "float | None"]


def available_cpus(*, cgroup_root: Path | None = None, proc_self_cgroup: Path | None = None) -> int:
    """CPUs this process may use: affinity mask and cgroup CPU quota, whichever is less.

    The locations default to the real ones (``CGROUP_ROOT``, ``PROC_SELF_CGROUP``)."""
    cpus = affinity_cpus()
    quota = cgroup_cpu_quota(cgroup_root=cgroup_root, proc_self_cgroup=proc_self_cgroup)
    if quota is not None:
        cpus = min(cpus, max(1, math.floor(quota)))
    return cpus


def affinity_cpus() -> int:
    """CPUs in this process's affinity mask (all the host's where there is no such call)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def cgroup_cpu_quota(
    *, cgroup_root: Path | None = None, proc_self_cgroup: Path | None = None
) -> float | None:
    """The tightest CPU quota (in CPUs) on this process's cgroup and its ancestors; None when
    there is none, or no cgroup file system to read."""
    cgroup_root = cgroup_root or CGROUP_ROOT
    proc_self_cgroup = proc_self_cgroup or PROC_SELF_CGROUP
    try:
        lines = proc_self_cgroup.read_text().splitlines()
    except OSError:
        return None
    quotas: list[float] = []
    for line in lines:
        number, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if number == "0" and controllers == "":
            quotas += _limits(cgroup_root, path, _v2_quota)
        elif "cpu" in controllers.split(","):
            # v1: the cpu controller is mounted as "cpu", or with cpuacct as "cpu,cpuacct".
            for mount in (controllers, "cpu", "cpu,cpuacct"):
                if (cgroup_root / mount).is_dir():
                    quotas += _limits(cgroup_root / mount, path, _v1_quota)
                    break
    return min(quotas) if quotas else None


def _limits(mount: Path, path: str, read: _QuotaReader) -> list[float]:
    """The quotas set on the cgroup at ``path`` under ``mount`` and on each of its ancestors.

    Without a cgroup namespace a container may see its host's path for its own cgroup, which
    does not exist in its view of the mount: its limits are then those of the mount's root."""
    here = mount / path.strip("/")
    if not here.is_dir():
        here = mount
    found = []
    while True:
        quota = read(here)
        if quota is not None:
            found.append(quota)
        if here == mount or mount not in here.parents:
            return found
        here = here.parent


def _v2_quota(folder: Path) -> float | None:
    try:
        quota, _, period = (folder / "cpu.max").read_text().strip().partition(" ")
    except OSError:
        return None
    return _ratio(quota, period or "100000")


def _v1_quota(folder: Path) -> float | None:
    try:
        quota = (folder / "cpu.cfs_quota_us").read_text().strip()
        period = (folder / "cpu.cfs_period_us").read_text().strip()
    except OSError:
        return None
    return _ratio(quota, period)


def _ratio(quota: str, period: str) -> float | None:
    """CPUs allowed by ``quota`` microseconds per ``period``; None for no limit ("max", -1)."""
    try:
        microseconds, every = int(quota), int(period)
    except ValueError:
        return None  # "max"
    if microseconds <= 0 or every <= 0:
        return None
    return microseconds / every
