"""The task graph as DOT, Mermaid, and one self-contained HTML page.

The page stays usable at 10,000+ nodes because it never lays the graph out as a free-form drawing:
tasks are grouped by family (rows) and partition (columns, the first date/hour parameter), each
cell a coloured bar of task states; a canvas shows every task by dependency depth; clicking a
cell or a task lists the tasks with their dependencies. Data is embedded as JSON; no network.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable
from typing import Any

from backbeat.dag.parameters import DateHourParameter, DateParameter

STATE_COLOURS = {
    "done": "#2e7d32",
    "complete": "#81c784",
    "pending": "#90a4ae",
    "running": "#1e88e5",
    "polling": "#1e88e5",
    "waiting_lease": "#8e24aa",
    "failed": "#e53935",
    "upstream_failed": "#fb8c00",
    "missing": "#fdd835",
}


def partition_of(task: Any) -> str:
    for name, param in task.get_params():
        if isinstance(param, DateHourParameter | DateParameter):
            value = task.param_kwargs.get(name)
            return "" if value is None else param.serialize(value)
    return ""


class Graph:
    """Nodes (task id, family, partition, state) and edges (dependency -> dependent)."""

    def __init__(self, nodes: Iterable[Any], states: dict[str, str] | None = None) -> None:
        nodes = list(nodes)
        index = {id(n): i for i, n in enumerate(nodes)}
        self.ids = [n.id for n in nodes]
        self.families = [n.task.task_family for n in nodes]
        self.partitions = [partition_of(n.task) for n in nodes]
        self.states = [(states or {}).get(n.id, n.state) for n in nodes]
        self.edges = [(index[id(d)], i) for i, n in enumerate(nodes) for d in n.deps if id(d) in index]
        self.depth = self._depths(len(nodes))

    @classmethod
    def from_tasks(cls, tasks: Iterable[Any], states: dict[str, str] | None = None) -> Graph:
        """Discover the graph of ``tasks`` (completeness checked, nothing run)."""
        from backbeat.dag.scheduler import Scheduler

        sched = Scheduler(dry_run=True)
        sched.discover(list(tasks))
        return cls(sched.order, states)

    def _depths(self, n: int) -> list[int]:
        preds: list[list[int]] = [[] for _ in range(n)]
        succ: list[list[int]] = [[] for _ in range(n)]
        for a, b in self.edges:
            preds[b].append(a)
            succ[a].append(b)
        left = [len(p) for p in preds]
        depth = [0] * n
        order = [i for i in range(n) if left[i] == 0]
        k = 0
        while k < len(order):
            i = order[k]
            k += 1
            for j in succ[i]:
                depth[j] = max(depth[j], depth[i] + 1)
                left[j] -= 1
                if left[j] == 0:
                    order.append(j)
        return depth

    # ------------------------------------------------------------------ DOT
    def to_dot(self) -> str:
        lines = ["digraph backbeat {", "  rankdir=LR;"]
        lines.append('  node [shape=box, style="filled,rounded", fontsize=10];')
        by_family: dict[str, list[int]] = {}
        for i, fam in enumerate(self.families):
            by_family.setdefault(fam, []).append(i)
        for c, (fam, members) in enumerate(sorted(by_family.items())):
            lines.append(f"  subgraph cluster_{c} {{")
            lines.append(f"    label={_dot_str(fam)};")
            for i in members:
                colour = STATE_COLOURS.get(self.states[i], "#ffffff")
                lines.append(
                    f"    n{i} [label={_dot_str(self.ids[i])}, fillcolor={_dot_str(colour)}, "
                    f"tooltip={_dot_str(self.states[i])}];"
                )
            lines.append("  }")
        for a, b in self.edges:
            lines.append(f"  n{a} -> n{b};")
        lines.append("}")
        return "\n".join(lines) + "\n"

    # ------------------------------------------------------------------ Mermaid
    def to_mermaid(self) -> str:
        lines = ["flowchart LR"]
        for state, colour in STATE_COLOURS.items():
            lines.append(f"  classDef {state} fill:{colour},color:#000")
        by_family: dict[str, list[int]] = {}
        for i, fam in enumerate(self.families):
            by_family.setdefault(fam, []).append(i)
        for c, (fam, members) in enumerate(sorted(by_family.items())):
            lines.append(f'  subgraph f{c}["{_mermaid_text(fam)}"]')
            for i in members:
                lines.append(f'    n{i}["{_mermaid_text(self.ids[i])}"]:::{self.states[i]}')
            lines.append("  end")
        for a, b in self.edges:
            lines.append(f"  n{a} --> n{b}")
        return "\n".join(lines) + "\n"

    # ------------------------------------------------------------------ HTML
    def to_html(self, title: str = "backbeat dag") -> str:
        fams = sorted(set(self.families))
        parts = sorted(set(self.partitions))
        states = sorted(set(self.states) | set(STATE_COLOURS))
        fi = {f: i for i, f in enumerate(fams)}
        pi = {p: i for i, p in enumerate(parts)}
        si = {s: i for i, s in enumerate(states)}
        data = {
            "families": fams,
            "partitions": parts,
            "states": states,
            "colours": [STATE_COLOURS.get(s, "#cccccc") for s in states],
            "ids": self.ids,
            "node": [
                [fi[self.families[i]], pi[self.partitions[i]], si[self.states[i]], self.depth[i]]
                for i in range(len(self.ids))
            ],
            "edges": self.edges,
        }
        payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
        from pathlib import Path

        page = (Path(__file__).with_name("viz_page.html")).read_text(encoding="utf-8")
        return page.replace("__TITLE__", html.escape(title)).replace("__DATA__", payload)

    def write(self, path: str, fmt: str | None = None) -> str:
        fmt = fmt or path.rsplit(".", 1)[-1]
        text = {
            "dot": self.to_dot,
            "gv": self.to_dot,
            "mmd": self.to_mermaid,
            "mermaid": self.to_mermaid,
            "html": self.to_html,
        }.get(fmt)
        if text is None:
            from backbeat.dag.errors import DagError

            raise DagError(f"{path}: unknown graph format {fmt!r} (dot, mermaid/mmd, html)")
        from backbeat.dag.targets import LocalTarget

        with LocalTarget(path).open("w") as out:
            out.write(text())
        return path


def _dot_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _mermaid_text(text: str) -> str:
    return html.escape(text, quote=True).replace("[", "&#91;").replace("]", "&#93;")
