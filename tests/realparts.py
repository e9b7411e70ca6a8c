"""Helpers for tests of real parts: in CI a real-part test that would skip fails instead."""

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def skip_or_fail(reason: str):
    if IN_CI:
        pytest.fail(f"CI=true and a required real part is unavailable: {reason}")
    pytest.skip(reason)
