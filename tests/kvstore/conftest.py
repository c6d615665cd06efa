"""Fixtures of the key/value store tests: the reference vectors and small generated stores."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

VECTORS = Path(__file__).resolve().parents[2].parent / "shared" / "testdata" / "sparkey"
NAMES = ["plain", "snappy-4k", "zstd-1k", "deletes", "snappy-deletes", "hash64", "binary", "empty"]


def load_vector(name: str) -> dict:
    if not VECTORS.is_dir():
        pytest.fail(f"the Sparkey test vectors are missing: {VECTORS}")
    data = json.loads((VECTORS / f"{name}.json").read_text())
    data["spl"] = VECTORS / f"{name}.spl"
    data["spi"] = VECTORS / f"{name}.spi"
    return data


def libsnappy_or_fail() -> None:
    """Byte-identical Snappy blocks need Google's libsnappy (Debian: libsnappy1v5); CI must have it."""
    from backbeat.kvstore.format import _libsnappy

    if _libsnappy() is None:
        if os.environ.get("CI"):
            pytest.fail("libsnappy (apt-get install libsnappy1v5) is required for byte-identical Snappy logs")
        pytest.skip("libsnappy not installed: Snappy logs are valid but not byte-identical")


@pytest.fixture(params=["c", "pure"], autouse=True)
def read_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every kvstore test runs twice: lookups in the C extension ``_fastget``, and in pure Python
    (``BACKBEAT_KVSTORE_PURE=1``, the fallback that serves where the extension is not built, e.g. in
    Cloud Functions zips). A missing extension fails the C run: ``pip install -e .`` builds it."""
    if request.param == "c":
        from backbeat.kvstore.reader import _fastget

        if _fastget() is None:
            pytest.fail("backbeat.kvstore._fastget is not built: run `pip install -e .` (needs gcc)")
        monkeypatch.delenv("BACKBEAT_KVSTORE_PURE", raising=False)
    else:
        monkeypatch.setenv("BACKBEAT_KVSTORE_PURE", "1")
    return request.param


@pytest.fixture(params=NAMES)
def vector(request: pytest.FixtureRequest) -> dict:
    return load_vector(request.param)


def sample_pairs(n: int, seed: int = 7) -> list[tuple[bytes, bytes]]:
    """Deterministic pairs with varied key and value lengths (0 to 300 bytes values)."""
    import random

    rnd = random.Random(seed)
    pairs = []
    for i in range(n):
        key = b"k%06d-" % i + rnd.randbytes(rnd.randrange(0, 12))
        value = rnd.randbytes(rnd.choice([0, 1, 5, 40, 127, 128, 300]))
        pairs.append((key, value))
    return pairs
