"""Static check: SQL text is never built from data; values travel as parameters.

Every statement passed to ``execute``/``executemany``/``copy``/``sql.SQL`` in the
services and the shared package must be a literal, a module constant, a
concatenation of those, or an f-string interpolating module constants only
(``f"LISTEN {NOTIFY_CHANNEL}"``). Identifiers from data go through
``psycopg.sql.Identifier`` (``sql.SQL("CREATE DATABASE {}").format(...)`` is fine:
``.format`` on an ``sql.SQL`` composes, it does not interpolate text). An f-string,
``%`` or ``str.format`` over anything else fails this test with its location.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("ingest", "stream", "triggers", "tmiot")
_CALLS = frozenset({"execute", "executemany", "copy", "SQL"})
# Variables that hold SQL text from elsewhere, each read and judged safe.
ALLOWED = {
    ("tmiot/db.py", "stmt"): "the statements of schema.sql, our own file",
    ("tmiot/simulate/fleet.py", "select"): "_one() is passed string literals only",
    ("tmiot/simulate/fleet.py", "insert"): "_one() is passed string literals only",
}


def _constant_name(node: ast.expr) -> bool:
    return isinstance(node, ast.Name) and node.id.lstrip("_").isupper()


def _problem(  # noqa: C901, PLR0911, PLR0912 - one answer per kind of expression
    node: ast.expr, constants: dict[str, ast.expr], seen: frozenset[str]
) -> str | None:
    """Why `node`, as SQL text, may carry data; None when it is built from constants only."""
    if isinstance(node, ast.Constant):
        return None
    if isinstance(node, ast.Name):
        if node.id in constants and node.id not in seen:
            return _problem(constants[node.id], constants, seen | {node.id})
        return None if _constant_name(node) else f"the variable {node.id!r}"
    if isinstance(node, ast.Attribute) and node.attr.isupper():
        return None  # a constant of another module or class
    if isinstance(node, ast.JoinedStr):
        for part in node.values:
            if isinstance(part, ast.FormattedValue) and not _constant_name(part.value):
                return f"an f-string interpolating {ast.unparse(part.value)!r}"
        return None
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _problem(node.left, constants, seen) or _problem(node.right, constants, seen)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
        return "a %-formatted string"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        if node.func.attr == "format":
            inner = node.func.value
            composed = isinstance(inner, ast.Call) and ast.unparse(inner.func).endswith("SQL")
            return None if composed else "str.format"
        if node.func.attr == "encode":
            return _problem(node.func.value, constants, seen)
    if isinstance(node, ast.Call) and ast.unparse(node.func).endswith(("SQL", "Composed")):
        return None  # psycopg.sql composition, checked where its text is built
    return f"an expression {ast.unparse(node)[:60]!r}"


def _module_constants(tree: ast.Module) -> dict[str, ast.expr]:
    constants: dict[str, ast.expr] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            target = stmt.targets[0]
            if isinstance(target, ast.Name):
                constants[target.id] = stmt.value
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value:
            constants[stmt.target.id] = stmt.value
    return constants


def _findings(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    constants = _module_constants(tree)
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and node.args):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else None
        if name not in _CALLS:
            continue
        problem = _problem(node.args[0], constants, frozenset())
        first = node.args[0]
        if isinstance(first, ast.Call) and isinstance(first.func, ast.Attribute):
            first = first.func.value  # stmt.encode()
        where = str(path.relative_to(ROOT))
        if isinstance(first, ast.Name) and (where, first.id) in ALLOWED:
            continue
        if problem is not None:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}() of {problem}")
    return found


def _sources() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def test_sql_is_built_from_constants_and_parameters_only() -> None:
    assert _sources(), "no source found"
    findings = [f for path in _sources() for f in _findings(path)]
    assert findings == []


@pytest.mark.parametrize(
    ("code", "flagged"),
    [
        ("cur.execute(f\"SELECT * FROM t WHERE name = '{name}'\")", True),
        ('cur.execute("SELECT * FROM t WHERE id = %s" % sensor)', True),
        ('cur.execute("SELECT {}".format(column))', True),
        ('cur.execute("SELECT 1 WHERE x = " + value)', True),
        ("query = f'DELETE FROM {table}'\ncur.execute(query)", True),
        ('cur.execute("SELECT * FROM t WHERE id = %s", (sensor,))', False),
        ('conn.execute(f"LISTEN {NOTIFY_CHANNEL}")', False),
        ('conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))', False),
        ("_Q = 'SELECT 1'\ncur.execute(_Q + ' WHERE id = ANY(%s)', (ids,))", False),
    ],
)
def test_the_check_tells_composition_from_interpolation(
    code: str,
    flagged: bool,  # noqa: FBT001 - a parameter of the table above
    tmp_path: Path,
) -> None:
    module = ROOT / "tests" / f"_sql_probe_{tmp_path.name}.py"
    try:
        module.write_text(code, encoding="utf-8")
        assert bool(_findings(module)) is flagged
    finally:
        module.unlink(missing_ok=True)
