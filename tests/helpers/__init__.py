"""Shared test helpers: one home for what more than one test module needs.

Test modules import from here (or from ``tests.services``), never from another test module.
"""
