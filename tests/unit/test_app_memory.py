"""An app that a process builds and lets go of is freed: FastAPI keeps every endpoint it
sees in module-level caches (4096 entries, keyed by the function), so a route whose
endpoint is a closure over its app (as the docs pages once were) kept every app alive, and
a test worker's heap grew by ~17,000 objects per app until each full garbage collection
took seconds."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

from voicemail.app import create_app
from voicemail.settings import Settings


def test_an_app_let_go_of_is_freed(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]
    create_app(settings).openapi()  # FastAPI's caches warmed with the module's own endpoints
    app = create_app(settings)
    app.openapi()
    freed = weakref.ref(app)
    del app
    gc.collect()
    assert freed() is None, [type(r).__name__ for r in gc.get_referrers(freed())][:10]
