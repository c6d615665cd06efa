"""``backbeat kv`` commands, run through the real typer app."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from backbeat.cli import app
from backbeat.kvstore import KvStoreError

runner = CliRunner()


def test_build_info_get_dump_verify(tmp_path: Path) -> None:
    source = tmp_path / "in.tsv"
    source.write_text("".join(f"user{i}\tvalue {i}\n" for i in range(3000)) + "tab\\key\tline\n")
    out = runner.invoke(app, ["kv", "build", str(source), str(tmp_path / "s.spl"), "--compression", "snappy"])
    assert out.exit_code == 0, out.output
    assert "3,001 entries" in out.output

    out = runner.invoke(app, ["kv", "info", str(tmp_path / "s.spi")])
    assert out.exit_code == 0 and "3,001" in out.output and "snappy, 4096 byte blocks" in out.output

    out = runner.invoke(app, ["kv", "get", str(tmp_path / "s.spl"), "user42"])
    assert out.exit_code == 0 and out.output == "value 42\n"
    out = runner.invoke(app, ["kv", "get", str(tmp_path / "s.spl"), "75736572343200", "--hex"])
    assert out.exit_code == 1 and "not found" in out.output
    out = runner.invoke(app, ["kv", "get", str(tmp_path / "s.spl"), "7573657234", "--hex"])
    assert out.exit_code == 0 and out.output == b"value 4".hex() + "\n"

    out = runner.invoke(app, ["kv", "dump", str(tmp_path / "s.spi"), "--limit", "2"])
    assert out.output == "user0\tvalue 0\nuser1\tvalue 1\n"
    out = runner.invoke(app, ["kv", "dump", str(tmp_path / "s.spi"), "--log"])
    assert out.output.count("\n") == 3001 and out.output.startswith("put\tuser0\tvalue 0\n")

    out = runner.invoke(app, ["kv", "verify", str(tmp_path / "s.spi")])
    assert out.exit_code == 0 and "ok: entries=3,001" in out.output

    out = runner.invoke(
        app, ["kv", "build", str(tmp_path / "s.spl"), "--index-only", "--seed", "7", "--method", "exact"]
    )
    assert out.exit_code == 0, out.output
    out = runner.invoke(app, ["kv", "info", str(tmp_path / "s.spi")])
    assert "seed 7" in out.output


def test_build_rejects_malformed_input(tmp_path: Path) -> None:
    source = tmp_path / "in.tsv"
    source.write_text("ok\tline\nno tab here\n")
    out = runner.invoke(app, ["kv", "build", str(source), str(tmp_path / "s.spl")])
    assert isinstance(out.exception, KvStoreError)  # main() prints it as one "error:" line, exit 1
    assert str(out.exception) == f"{source}:2: expected key<TAB>value"
    assert not (tmp_path / "s.spl").exists() and list(tmp_path.iterdir()) == [source]


def test_demo_stage_builds_publishes_and_serves(tmp_path: Path) -> None:
    from rich.console import Console

    from backbeat.cloud import connect
    from backbeat.demo import DemoContext
    from backbeat.kvstore import demo
    from backbeat.settings import Settings

    settings = Settings(backend="local", data_dir=tmp_path / "data")
    platform = connect(settings)
    try:
        ctx = DemoContext(platform=platform, settings=settings, workdir=tmp_path, console=Console(quiet=True))
        figures = demo.run(ctx, entries=20_000)
    finally:
        platform.close()
    assert figures["entries"] == 20_000 and figures["get_many_keys_per_s"] > 0
    assert platform.blobs.stat("backbeat-kv", "stores/demo/CURRENT") is not None
