"""Imports point one way (STYLE.md sections 1 and 7): cores <- aaa <- adapters <- service.

Every import statement of the packages that ship (``lns``, ``aaa``), function-local
ones and those under ``if TYPE_CHECKING:`` included, is read with `ast` and checked
against the rules below; a failure lists each offending import as ``file:line``. The
checker is tested on sources written here too, so a rule that silently matches nothing
would show.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("lns", "aaa")

# The I/O-free cores: fed bytes, events and a clock, they return effects.
CORES = (
    "lns.l2tp",
    "lns.ppp",
    "lns.pool",
    "lns.dataplane",
    "lns.sessions",
    "lns.deadlines",
    "lns.iccid",
)


@dataclass(frozen=True)
class Rule:
    """Modules under any of ``importers`` may not import anything under ``forbidden``,
    except modules under ``exempt``."""

    name: str
    importers: tuple[str, ...]
    forbidden: tuple[str, ...]
    exempt: tuple[str, ...] = ()


RULES = (
    Rule(
        "cores are I/O-free and import nothing above them",
        CORES,
        (
            "twisted",
            "time",
            "socket",
            "aaa",
            "lns.adapters",
            "lns.runtime",
            "lns.testing",
            "lns.loadgen",
        ),
    ),
    Rule(
        "the shared lower homes import neither aaa nor the adapters",
        ("lns.db", "lns.config", "lns.runtime"),
        ("aaa", "lns.adapters"),
    ),
    Rule(
        "aaa sits below the adapters, the service and the tools",
        ("aaa",),
        ("lns.adapters", "lns.tap", "lns.testing", "lns.loadgen"),
    ),
    Rule(
        "shipped code never imports the tests or the benchmarks",
        PACKAGES,
        ("tests", "benchmarks"),
    ),
    Rule(
        "only the load generator uses the test-support package",
        PACKAGES,
        ("lns.testing",),
        exempt=("lns.testing", "lns.loadgen"),
    ),
)


@dataclass(frozen=True)
class Import:
    path: str  # relative to ROOT
    line: int
    module: str  # the importing module
    target: str  # the module imported, absolute

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.module} imports {self.target}"


def under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, path: str, module: str, is_package: bool) -> Iterator[Import]:
    """Every module an import statement in ``source`` names, resolved to an absolute name.

    ``from X import Y`` yields X and X.Y (Y may be a submodule: ``from lns import
    adapters`` imports lns.adapters); a relative import is resolved against ``module``.
    """
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source, path)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(path, node.lineno, module, alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base = ".".join(base_parts[: len(base_parts) - node.level + 1])
                origin = f"{base}.{node.module}" if node.module else base
            else:
                assert node.module is not None
                origin = node.module
            yield Import(path, node.lineno, module, origin)
            for alias in node.names:
                if alias.name != "*":
                    yield Import(path, node.lineno, module, f"{origin}.{alias.name}")


def shipped_imports(root: Path = ROOT) -> list[Import]:
    found: list[Import] = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            found += imports_of(
                path.read_text(encoding="utf-8"),
                str(path.relative_to(root)),
                module_name(path, root),
                path.name == "__init__.py",
            )
    return found


def violations(found: list[Import], rules: tuple[Rule, ...] = RULES) -> list[tuple[Rule, Import]]:
    bad = []
    for rule in rules:
        for item in found:
            if (
                under(item.module, rule.importers)
                and not under(item.module, rule.exempt)
                and under(item.target, rule.forbidden)
            ):
                bad.append((rule, item))
    return bad


def report(bad: list[tuple[Rule, Import]]) -> str:
    lines = []
    for rule in RULES:
        mine = sorted({str(item) for r, item in bad if r == rule})
        if mine:
            lines.append(f"{rule.name}:")
            lines += [f"  {line}" for line in mine]
    return "\n".join(lines)


def test_imports_point_one_way() -> None:
    found = shipped_imports()
    assert len(found) > 500  # the walk found the packages' imports at all
    bad = violations(found)
    assert not bad, "imports that go the wrong way:\n" + report(bad)


# --- the checker itself, on sources written here ----------------------------------------


@pytest.mark.parametrize(
    ("module", "source", "target"),
    [
        ("lns.l2tp.tunnel", "import time\n", "time"),
        ("lns.l2tp.tunnel", "import twisted.internet.reactor as r\n", "twisted.internet.reactor"),
        (
            "lns.ppp.lcp",
            "def later():\n    from twisted.internet import task\n",
            "twisted.internet",
        ),
        ("lns.ppp.lcp", "if TYPE_CHECKING:\n    from aaa.radius import auth\n", "aaa.radius"),
        ("lns.pool.allocator", "from ..adapters import pool\n", "lns.adapters"),
        ("lns.pool.allocator", "from .. import runtime\n", "lns.runtime"),
        ("lns.sessions", "from lns import testing\n", "lns.testing"),
        ("lns.iccid", "from lns.loadgen.run import Run\n", "lns.loadgen.run"),
        ("lns.db.database", "from aaa.radius.spool import due\n", "aaa.radius.spool"),
        ("lns.runtime", "from lns.adapters.udp import Udp\n", "lns.adapters.udp"),
        ("aaa.radius.client", "from lns.adapters.services import x\n", "lns.adapters.services"),
        ("aaa.radius.client", "from lns import tap\n", "lns.tap"),
        ("lns.adapters.ppp", "from tests.aaa import conftest\n", "tests.aaa"),
        ("lns.cli", "import benchmarks.servers\n", "benchmarks.servers"),
        ("lns.adapters.udp", "from lns.testing.lacsim.lac import Lac\n", "lns.testing.lacsim"),
    ],
)
def test_each_rule_catches_its_kind_of_import(module: str, source: str, target: str) -> None:
    is_package = module == "lns.sessions"
    path = module.replace(".", "/") + ("/__init__.py" if is_package else ".py")
    bad = violations(list(imports_of(source, path, module, is_package)))
    assert bad, f"{module}: {source!r} was not caught"
    assert any(under(item.target, (target,)) for _, item in bad)
    assert all(item.path == path and item.line >= 1 for _, item in bad)


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("lns.l2tp.tunnel", "from lns.l2tp.avp import Avp\nimport hashlib\n"),
        ("lns.l2tp.tunnel", "import timeit\nfrom lns import iccid\n"),  # not "time"
        ("lns.adapters.ppp", "from twisted.internet import reactor\nimport aaa.radius.auth\n"),
        ("aaa.radius.auth", "from lns.runtime import DeadlineTimer\nfrom lns.ppp import auth\n"),
        ("lns.loadgen.run", "from lns.testing.lacsim.lac import Lac\n"),
        ("lns.testing.site", "from lns.testing.netns import NetNs\nimport socket\n"),
    ],
)
def test_imports_the_right_way_pass(module: str, source: str) -> None:
    assert violations(list(imports_of(source, "x.py", module, False))) == []


def test_report_names_the_rule_and_the_place() -> None:
    bad = violations(
        list(imports_of("\n\nimport socket\n", "lns/ppp/lcp.py", "lns.ppp.lcp", False))
    )
    assert report(bad) == (
        "cores are I/O-free and import nothing above them:\n"
        "  lns/ppp/lcp.py:3: lns.ppp.lcp imports socket"
    )
