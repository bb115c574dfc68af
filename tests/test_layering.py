"""Imports point one way (STYLE.md sections 1 and 7): cores <- aaa <- adapters <- service.

Every import statement of the packages that ship (``lns``, ``aaa``) and of the tests,
benchmarks and scripts, function-local ones and those under ``if TYPE_CHECKING:``
included, is read with `ast` and checked against the rules below; a failure lists each
offending import as ``file:line``. No file edits ``sys.path`` either: the working tree
is imported as the root of the repository (``python -m``) or through ``PYTHONPATH``. The
checker is tested on sources written here too, so a rule that silently matches nothing
would show.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("lns", "aaa")  # what ships
SUPPORT = ("tests", "benchmarks", "scripts")  # what does not

# The I/O-free cores: fed bytes, events and a clock, they return effects.
CORES = (
    "lns.l2tp",
    "lns.ppp",
    "lns.pool",
    "lns.dataplane",
    "lns.sessions",
    "lns.deadlines",
    "lns.iccid",
    "lns.histogram",
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
    Rule(
        "test modules import no other test module (helpers: lns.testing; fixtures: conftest.py)",
        SUPPORT,
        ("tests", "benchmarks"),
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


@functools.cache
def parsed(path: Path) -> ast.Module:
    """A file of the repository as a syntax tree (each file parsed once per run)."""
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


def statements(tree: ast.AST) -> Iterator[ast.stmt]:
    """Every statement, at any depth (function bodies, branches, handlers), without
    walking into expressions: an import is always a statement."""
    for field in ("body", "orelse", "finalbody", "handlers", "cases"):
        for child in getattr(tree, field, ()):
            if isinstance(child, ast.stmt):
                yield child
            yield from statements(child)


def imports_of(
    source: str | ast.Module, path: str, module: str, is_package: bool
) -> Iterator[Import]:
    """Every module an import statement in ``source`` names, resolved to an absolute name.

    ``from X import Y`` yields X and X.Y (Y may be a submodule: ``from lns import
    adapters`` imports lns.adapters); a relative import is resolved against ``module``.
    """
    package = module if is_package else module.rpartition(".")[0]
    tree = ast.parse(source, path) if isinstance(source, str) else source
    for node in statements(tree):
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


def python_files(root: Path = ROOT) -> list[Path]:
    return [
        path
        for top in (*PACKAGES, *SUPPORT, "migrations", "twisted")
        for path in sorted((root / top).rglob("*.py"))
    ]


def all_imports(root: Path = ROOT) -> list[Import]:
    found: list[Import] = []
    for top in (*PACKAGES, *SUPPORT):
        for path in sorted((root / top).rglob("*.py")):
            found += imports_of(
                parsed(path),
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
    found = all_imports()
    assert len(found) > 500  # the walk found the packages' imports at all
    bad = violations(found)
    assert not bad, "imports that go the wrong way:\n" + report(bad)


_PATH_EDITS = frozenset({"insert", "append", "extend", "remove", "pop", "clear", "__setitem__"})


def _is_sys_path(node: ast.expr) -> bool:
    if isinstance(node, ast.Subscript):
        node = node.value
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "path"
        and isinstance(node.value, ast.Name)
        and node.value.id == "sys"
    )


def sys_path_edits(source: str | ast.Module, path: str) -> list[str]:
    """``file:line`` of each statement that changes ``sys.path`` (or adds a site dir)."""
    found = []
    tree = ast.parse(source, path) if isinstance(source, str) else source
    for node in ast.walk(tree):
        edit = False
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            method = node.func
            edit = (method.attr in _PATH_EDITS and _is_sys_path(method.value)) or (
                method.attr == "addsitedir"
                and isinstance(method.value, ast.Name)
                and method.value.id == "site"
            )
        elif isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign | ast.Delete):
            targets = node.targets if isinstance(node, ast.Assign | ast.Delete) else [node.target]
            edit = any(_is_sys_path(target) for target in targets)
        if edit:
            found.append(f"{path}:{getattr(node, 'lineno', 0)}")
    return found


def test_no_file_edits_sys_path() -> None:
    files = python_files()
    assert len(files) > 100
    found = [
        edit for path in files for edit in sys_path_edits(parsed(path), str(path.relative_to(ROOT)))
    ]
    assert found == [], "sys.path edited at:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "source",
    [
        "import sys\nsys.path.insert(0, 'x')\n",
        "import sys\ndef f():\n    sys.path.append('x')\n",
        "import sys\nsys.path[:0] = ['x']\n",
        "import sys\nsys.path = ['x']\n",
        "import sys\nsys.path += ['x']\n",
        "import site\nsite.addsitedir('x')\n",
    ],
)
def test_each_kind_of_sys_path_edit_is_caught(source: str) -> None:
    assert sys_path_edits(source, "x.py") != []


def test_reading_sys_path_is_no_edit() -> None:
    assert sys_path_edits("import sys\nprint(sys.path[0], list(sys.path))\n", "x.py") == []


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
        ("tests.aaa.test_node_radius", "from tests.aaa.test_dae import x\n", "tests.aaa"),
        ("tests.loadgen.test_run", "from ..l2tp import harness\n", "tests.l2tp"),
        ("benchmarks.memory", "from benchmarks.servers import Harness\n", "benchmarks.servers"),
        ("scripts.try_it", "import tests.aaa.freeradius\n", "tests.aaa"),
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
        ("tests.aaa.test_dae", "from lns.testing.dynauth import SECRET\nimport pytest\n"),
        ("benchmarks.memory", "from lns.testing.servers import Harness\n"),
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
