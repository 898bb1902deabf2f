"""Fixtures for the s3 service (see tests/services/__init__.py)."""

from __future__ import annotations
