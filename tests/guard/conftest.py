"""Guard fixtures: a small bundle with one rule per semantic, the example feed bundle, a TCP
fault proxy in front of the real Redis (to make the label store down or slow for real), and a
manual clock for the breakers."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import pytest
from guard_helpers import GUARD_TEST_BUNDLE, FaultProxy, ManualClock


@pytest.fixture
def bundle_path(tmp_path) -> Path:
    p = tmp_path / "guard-test.yaml"
    p.write_text(GUARD_TEST_BUNDLE)
    return p


@pytest.fixture
def test_bundle(bundle_path):
    from assay.policy import load_bundle

    return load_bundle(bundle_path)


@pytest.fixture
def feed_bundle():
    from assay.guard.cli import resolve_bundle_path
    from assay.policy import load_bundle

    return load_bundle(resolve_bundle_path("builtin:feed"))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def fault_proxy(redis_url):
    u = urlparse(redis_url)
    proxy = FaultProxy(u.hostname or "127.0.0.1", u.port or 6379)
    db = (u.path or "/0").lstrip("/") or "0"
    proxy.url = f"redis://127.0.0.1:{proxy.port}/{db}"
    yield proxy
    proxy.close()

