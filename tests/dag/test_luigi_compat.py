"""A Luigi task module runs on Backbeat after changing its import, and gives Luigi's results."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
SOURCE = (HERE / "luigi_wordcount.py").read_text()


def _write_inputs(root: Path) -> None:
    (root / "input").mkdir(parents=True)
    (root / "input" / "2026-01-01.txt").write_text("a bb bb ccc dd a ccc\n")
    (root / "input" / "2026-01-02.txt").write_text("bb x ccc ccc\n")


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_luigi_module_runs_on_backbeat_with_the_same_results(tmp_path: Path, monkeypatch) -> None:
    # 1. the untouched module on real Luigi, in a subprocess (Luigi keeps global state)
    luigi_root = tmp_path / "luigi"
    _write_inputs(luigi_root)
    script = (
        f"import sys, luigi; sys.path.insert(0, {str(HERE)!r}); import luigi_wordcount as m; "
        "ok = luigi.build([m.All()], local_scheduler=True, log_level='ERROR'); sys.exit(0 if ok else 1)"
    )
    env = {**os.environ, "WORDCOUNT_ROOT": str(luigi_root)}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True, timeout=120)
    expected = json.loads((luigi_root / "report.json").read_text())

    # 2. the same module with only its import changed, on Backbeat
    bb_root = tmp_path / "backbeat"
    _write_inputs(bb_root)
    ported = SOURCE.replace("import luigi\n", "import backbeat.dag as luigi\n", 1)
    assert ported != SOURCE
    path = tmp_path / "wordcount_ported.py"
    path.write_text(ported)
    monkeypatch.setenv("WORDCOUNT_ROOT", str(bb_root))
    module = _load(path, "wordcount_ported")
    import backbeat.dag as dag

    result = module.luigi.build([module.All()], local_scheduler=True)
    assert result  # truthy like luigi.build's True
    assert json.loads((bb_root / "report.json").read_text()) == expected
    assert expected["hours"] == ["00", "01", "02"] and expected["total"]["ccc"] == 4
    for name in ("2026-01-01-2.json", "2026-01-02-2.json"):
        assert (bb_root / "counts" / name).read_text() == (luigi_root / "counts" / name).read_text()
    # a rerun does nothing, as in Luigi
    again = dag.build([module.All()])
    assert again.ok and set(again.counts) == {"complete"}


def test_luigi_failure_semantics_exit_codes(tmp_path: Path, monkeypatch) -> None:
    """Missing external input: Luigi's build returns False; ours is falsy and names the input."""
    monkeypatch.setenv("WORDCOUNT_ROOT", str(tmp_path))
    path = tmp_path / "wordcount_ported2.py"
    path.write_text(SOURCE.replace("import luigi\n", "import backbeat.dag as luigi\n", 1))
    module = _load(path, "wordcount_ported2")
    summary = module.luigi.build([module.All()], local_scheduler=True)
    assert not summary
    assert any("InputText" in m for m in summary.missing)
