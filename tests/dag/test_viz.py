"""The graph page at 10,000 tasks: self-contained, grouped by family and partition, all states."""

from __future__ import annotations

import datetime as dt
import json
import re

import backbeat.dag as dag
from backbeat.dag.viz import Graph


class Hourly(dag.Task):
    hour = dag.DateHourParameter()
    shard = dag.IntParameter()

    def requires(self):
        if self.shard == 0:
            return []
        return [Hourly(self.hour, self.shard - 1)]

    def run(self) -> None:
        pass


class Day(dag.WrapperTask):
    n = dag.IntParameter()

    def requires(self):
        start = dt.datetime(2026, 1, 1)
        return [Hourly(start + dt.timedelta(hours=h), self.n - 1) for h in range(100)]


def test_html_page_at_ten_thousand_tasks() -> None:
    graph = Graph.from_tasks([Day(n=100)])
    assert len(graph.ids) == 10_001 and len(graph.edges) == 10_000
    page = graph.to_html("ten thousand")
    assert len(page) < 3_000_000
    assert not re.search(r"""(src|href)\s*=\s*["']?https?://""", page)  # nothing fetched from the network
    data = json.loads(
        re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S).group(1)
    )
    assert data["families"] == ["Day", "Hourly"]
    assert len(data["partitions"]) == 101  # 100 hours + the wrapper's none
    assert len(data["node"]) == 10_001
    assert max(n[3] for n in data["node"]) == 100  # depth of the chain plus the wrapper
    assert {data["states"][n[2]] for n in data["node"]} == {"pending"}


def test_states_and_escaping_in_every_format(tmp_path) -> None:
    from tests.dag.cli_tasks import Quote

    q = Quote(text='say "hi" [now] </script>')
    summary = dag.build([q])
    graph = Graph(summary.nodes())
    assert graph.states == ["done"]
    dot = graph.to_dot()
    assert 'label="Quote(text=say \\"hi\\" [now] </script>)"' in dot
    mmd = graph.to_mermaid()
    assert "&quot;hi&quot; &#91;now&#93;" in mmd and ":::done" in mmd
    page = graph.to_html()
    assert "</script>)" not in page.split('id="data">', 1)[1].split("</script>", 1)[0]
    path = graph.write(str(tmp_path / "g.html"))
    assert open(path).read() == page
