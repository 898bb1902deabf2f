"""Fixtures of the integration tests that run real processes on one PostgreSQL database
(``tests/helpers/processes.py``). Modules that run them on both databases define their
own ``cluster`` from the ``database`` fixture instead (a module's fixture wins)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.processes import Admin, Cluster, cluster_at


@pytest.fixture
def cluster(tmp_path: Path, postgres_url: str) -> Iterator[Cluster]:
    """Processes sharing this run's PostgreSQL database; killed when the test ends."""
    yield from cluster_at(tmp_path, postgres_url)


@pytest.fixture
def admin(cluster: Cluster) -> Iterator[Admin]:
    """The test's own view of the cluster's database and storage."""
    admin = Admin(cluster)
    yield admin
    admin.close()
