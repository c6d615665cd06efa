"""Build the deployable zip of a function: ``main.py`` (and its folder), ``requirements.txt``, ``backbeat/``.

Cloud Functions (2nd gen, Python) builds from a source archive holding ``main.py`` and
``requirements.txt`` at its root; shipping the ``backbeat`` package as a folder beside ``main.py``
means the deployed function imports exactly the library the tests ran, with no private index.

Zips are deterministic -- sorted entries, a fixed timestamp and fixed permissions -- so their
sha256 (which Terraform uses to name the uploaded object) changes only when content does, and an
unchanged function is not redeployed. Each zip is written to a temp file and renamed into place.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
import tempfile
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from backbeat.errors import BackbeatError
from backbeat.stack.manifest import Manifest

FIXED_TIME = (1980, 1, 1, 0, 0, 0)
SKIP_DIRS = {"__pycache__", "tests", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis"}
# Compiled extensions built here (``*.so``, e.g. backbeat.kvstore._fastget) are never shipped: they
# match this machine, not the Cloud Functions runtime; there the pure-Python fallbacks serve.
SKIP_SUFFIXES = (".pyc", ".pyo", ".so", ".so.tmp", ".egg-info")
RUNTIME_EXTRA = "gcp"  # the google clients, functions-framework and cloudevents
# Large clients only some functions use (compute_v1 alone is ~35 MB installed): a function gets them
# only when its manifest entry lists them under ``extra_requirements``.
OPT_IN = frozenset({"google-cloud-compute", "google-cloud-dataproc"})


class PackagingError(BackbeatError):
    """A zip cannot be built; the message names the function and the missing piece."""


@dataclass(frozen=True)
class PackageResult:
    function: str
    path: Path
    size: int
    sha256: str
    entries: int


def _req_name(req: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
    if not match:
        raise PackagingError(f"cannot read requirement {req!r}")
    return match.group(1)


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_requirements(root: Path, extra: tuple[str, ...] | list[str] = ()) -> list[str]:
    """``name==installed-version`` for backbeat's dependencies and its ``gcp`` extra, sorted.

    Read from ``pyproject.toml`` at ``root`` (so a freshly added dependency is included without
    reinstalling), pinned to what is installed here: the zip runs with what the tests ran with.
    The :data:`OPT_IN` clients are left out unless named in ``extra`` (a function's
    ``extra_requirements``), which may also name any other installed distribution.
    """
    pyproject = root / "pyproject.toml"
    try:
        project = tomllib.loads(pyproject.read_text())["project"]
    except (OSError, KeyError, tomllib.TOMLDecodeError) as exc:
        raise PackagingError(f"cannot read the dependencies from {pyproject}: {exc}") from None
    reqs = list(project.get("dependencies", [])) + list(
        project.get("optional-dependencies", {}).get(RUNTIME_EXTRA, [])
    )
    wanted = {_canonical(e) for e in extra}
    names = [_req_name(r) for r in reqs]
    names = [n for n in names if _canonical(n) not in OPT_IN or _canonical(n) in wanted]
    names += [e for e in extra if _canonical(e) not in {_canonical(n) for n in names}]
    pinned: dict[str, str] = {}
    for name in names:
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            raise PackagingError(
                f"{name} (a runtime dependency in {pyproject}) is not installed here"
            ) from None
        pinned[name.lower()] = f"{name}=={version}"
    return [pinned[k] for k in sorted(pinned)]


def _walk(folder: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.endswith(".egg-info"))
        for name in sorted(filenames):
            if not name.endswith(SKIP_SUFFIXES):
                yield Path(dirpath) / name


def library_dir() -> Path:
    """The folder of the ``backbeat`` package (``lib/`` in the repository)."""
    return Path(__file__).resolve().parents[1]


def zip_entries(manifest: Manifest, function: str, library: Path | None = None) -> list[tuple[str, bytes]]:
    """Every ``(archive name, bytes)`` of a function's zip, sorted by name.

    ``library`` is the folder shipped as ``backbeat/`` (default: this package's own folder).
    """
    fn = manifest.functions[function]
    if not fn.main_py.is_file():
        raise PackagingError(f"function {function}: {fn.main_py} does not exist")
    lib = Path(library) if library is not None else library_dir()
    entries: dict[str, bytes] = {}
    for path in _walk(fn.source):
        rel = path.relative_to(fn.source).as_posix()
        if rel != "requirements.txt":  # generated below
            entries[rel] = path.read_bytes()
    for path in _walk(lib):
        entries["backbeat/" + path.relative_to(lib).as_posix()] = path.read_bytes()
    reqs = runtime_requirements(manifest.root, fn.extra_requirements)
    header = f"# generated by `backbeat package` for function {function}; pinned to the tested versions\n"
    entries["requirements.txt"] = (header + "\n".join(reqs) + "\n").encode()
    return sorted(entries.items())


def build_zip(
    manifest: Manifest, function: str, out_dir: str | Path, library: Path | None = None
) -> PackageResult:
    """Write ``<out_dir>/<function>.zip`` deterministically; returns its path, size and sha256."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = zip_entries(manifest, function, library)
    target = out_dir / f"{function}.zip"
    fd, tmp_name = tempfile.mkstemp(prefix=f".{function}-", suffix=".zip.tmp", dir=out_dir)
    try:
        with os.fdopen(fd, "wb") as fh, zipfile.ZipFile(fh, "w") as zf:
            for name, data in entries:
                info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.create_system = 3  # unix, so the permission bits below are honoured
                info.external_attr = (0o100644 & 0xFFFF) << 16
                zf.writestr(info, data, compresslevel=9)
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    return PackageResult(function, target, target.stat().st_size, digest, len(entries))
