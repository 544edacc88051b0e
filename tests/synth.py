"""Reading synthesized stacks: the helpers every spec uses."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from stacks.app import build_app
from stacks.config import Config


class Synth:
    """The synthesized app: one parsed `cdk.tf.json` per stack, plus the manifest."""

    def __init__(self, configs: list[Config], outdir: Path) -> None:
        build_app(configs, str(outdir)).synth()
        self.outdir = outdir
        self.manifest = json.loads((outdir / "manifest.json").read_text())
        self.stacks = {
            name: json.loads((outdir / "stacks" / name / "cdk.tf.json").read_text()) for name in self.manifest["stacks"]
        }

    def stack_dir(self, name: str) -> Path:
        return self.outdir / "stacks" / name


def resources(stack: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    """All resources of one type, keyed by their construct path (stable, readable in failures)."""
    found = stack.get("resource", {}).get(type_, {})
    return {body["//"]["metadata"]["path"].split("/", 1)[1]: body for body in found.values()}


def resource(stack: dict[str, Any], type_: str, path: str) -> dict[str, Any]:
    found = resources(stack, type_)
    assert path in found, f"no {type_} at {path!r}; found {sorted(found)}"
    return found[path]


def one(stack: dict[str, Any], type_: str) -> dict[str, Any]:
    found = resources(stack, type_)
    assert len(found) == 1, f"expected exactly one {type_}, found {sorted(found)}"
    return next(iter(found.values()))


def all_resources(stack: dict[str, Any]):
    for type_, items in stack.get("resource", {}).items():
        for body in items.values():
            yield type_, body["//"]["metadata"]["path"], body


def mismatches(actual: Any, expected: Any, where: str = "") -> list[str]:
    """Deep-partial comparison: every key in `expected` must match; lists match element-wise."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{where or '.'}: expected an object, got {actual!r}"]
        problems = []
        for key, value in expected.items():
            if value is ABSENT:
                if key in actual:
                    problems.append(f"{where}.{key}: must be absent, got {actual[key]!r}")
            elif key not in actual:
                problems.append(f"{where}.{key}: missing (expected {value!r})")
            else:
                problems.extend(mismatches(actual[key], value, f"{where}.{key}"))
        return problems
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [f"{where}: expected {len(expected)} items, got {actual!r}"]
        return [
            p for i, (a, e) in enumerate(zip(actual, expected, strict=True)) for p in mismatches(a, e, f"{where}[{i}]")
        ]
    return [] if actual == expected else [f"{where}: expected {expected!r}, got {actual!r}"]


class _Absent:
    def __repr__(self) -> str:
        return "<absent>"


ABSENT = _Absent()


def assert_matches(actual: Any, expected: Any) -> None:
    problems = mismatches(actual, expected)
    assert not problems, "synthesized JSON differs:\n  " + "\n  ".join(problems)


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("value_source")) for e in container["env"]}


def synth_construct(outdir: Path, build) -> dict[str, Any]:
    """Synthesize `build(stack)` alone in a stack named "unit" with a google provider; the parsed JSON."""
    from constructs.cdk import App, TerraformStack
    from constructs.cdk.google.provider import GoogleProvider

    app = App(outdir=str(outdir))
    stack = TerraformStack(app, "unit")
    GoogleProvider(stack, "google", project="example-project")
    build(stack)
    app.synth()
    return json.loads((outdir / "stacks" / "unit" / "cdk.tf.json").read_text())


def addresses_by(stack: dict[str, Any], type_: str, key: str) -> dict[str, str]:
    """{body[key]: Terraform address} for every resource of one type."""
    return {body[key]: f"{type_}.{name}" for name, body in stack.get("resource", {}).get(type_, {}).items()}


def dependency_graph(stack: dict[str, Any]) -> dict[str, set[str]]:
    """{address: the addresses it refers to or depends on}, as Terraform orders resources and data
    sources (`type.name.attribute` anywhere in an expression of its body, and `depends_on`)."""
    nodes: dict[str, Any] = {}
    for type_, items in stack.get("resource", {}).items():
        nodes |= {f"{type_}.{name}": body for name, body in items.items()}
    for type_, items in stack.get("data", {}).items():
        nodes |= {f"data.{type_}.{name}": body for name, body in items.items()}
    graph = {}
    for address, body in nodes.items():
        text = json.dumps({k: v for k, v in body.items() if k != "//"})
        expressions = " ".join(re.findall(r"\$\{.*?\}", text))
        graph[address] = {
            ref for ref in nodes if ref != address and re.search(rf"(?<![\w.-]){re.escape(ref)}(?![\w-])", expressions)
        }
        graph[address] |= {ref for ref in body.get("depends_on", []) if ref in nodes}
    return graph


def dependency_cycle(stack: dict[str, Any]) -> list[str]:
    """One cycle of the stack's dependency graph (a list of addresses, first repeated last), or []."""
    graph = dependency_graph(stack)
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        path.pop()
        return []

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return []
