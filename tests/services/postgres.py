"""Fixtures for the postgres service (see tests/services/__init__.py)."""

from __future__ import annotations
