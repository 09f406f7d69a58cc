"""Notification templates that cannot run code or read other fields than the documented ones.

A trigger's ``notification_template`` is a Jinja2 template rendered in an
``ImmutableSandboxedEnvironment`` with ``StrictUndefined`` and no autoescape
(plain text). :func:`validate_template` refuses, before anything runs, a template
that is too long, does not parse, names a variable outside :data:`FIELDS`, or
reads an attribute or an item of anything (``{{ x.__class__ }}``,
``{{ x['a'] }}``). Filters and tests are the sandbox's built-in ones; the sandbox
also caps ``range()``, and :func:`render` caps the output.

Fields (all optional strings or numbers; a missing one renders as empty):

==================  ==========================================================
``trigger_name``    the trigger's name
``trigger_number``  e.g. ``AST-2025-001``
``sensor_number``   e.g. ``SENS-001``
``sensor_type``     temperature, pressure, ...
``equipment_name``  the customer equipment's name
``value``           the reading's value that opened the incident
``unit``            the sensor's unit of measure
``anomaly_score``   0..1
``anomaly_type``    spike, drop, drift, noise, missing
``opened_at``       when the incident opened (ISO 8601, UTC)
``priority_level``  low, normal, high, urgent
``summary``         the incident's one-line description
``threshold``       the bound that was crossed
==================  ==========================================================

Example:
    >>> render("{{ sensor_number }}: {{ value }} {{ unit }}", {"sensor_number": "SENS-001",
    ...        "value": 97.2, "unit": "°C"})
    'SENS-001: 97.2 °C'
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from math import log10
from typing import Any, Final

from jinja2 import StrictUndefined, TemplateError, meta, nodes
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = [
    "DEFAULT_TEMPLATE",
    "FIELDS",
    "MAX_OUTPUT",
    "MAX_TEMPLATE",
    "TemplateRejected",
    "render",
    "validate_template",
]

FIELDS: Final = frozenset(
    {
        "trigger_name",
        "trigger_number",
        "sensor_number",
        "sensor_type",
        "equipment_name",
        "value",
        "unit",
        "anomaly_score",
        "anomaly_type",
        "opened_at",
        "priority_level",
        "summary",
        "threshold",
    }
)
MAX_TEMPLATE: Final = 2000  # characters of a template
MAX_OUTPUT: Final = 4000  # characters of a rendered notification
DEFAULT_TEMPLATE: Final = (
    "[{{ priority_level }}] {{ trigger_name }} ({{ trigger_number }}): {{ summary }}"
    " - sensor {{ sensor_number }} on {{ equipment_name }} at {{ opened_at }}"
)
# Names a template may use besides the fields; what it may read of a loop.
_BUILTINS: Final = frozenset({"range", "loop"})
_LOOP_ATTRS: Final = frozenset(
    {"index", "index0", "revindex", "revindex0", "first", "last", "length"}
)
# Filters whose output is at most a small multiple of their input, whatever the arguments.
_FILTERS: Final = frozenset(
    {
        "abs",
        "capitalize",
        "count",
        "d",
        "default",
        "first",
        "float",
        "int",
        "last",
        "length",
        "lower",
        "round",
        "string",
        "title",
        "trim",
        "truncate",
        "upper",
        "wordcount",
    }
)
_MAX_EXPONENT: Final = 64
_MAX_DIGITS: Final = 308  # the largest power a template may compute: about 1e308
_NOT_ALLOWED: Final = (
    nodes.Import,
    nodes.FromImport,
    nodes.Include,
    nodes.Extends,
    nodes.Macro,
    nodes.CallBlock,
    nodes.Slice,
    nodes.Getitem,
)


class TemplateRejected(ValueError):  # noqa: N818 - reads as what happened: the template is rejected
    """A template that may not be used (or failed to render); ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        """Keep the one-line `reason`."""
        super().__init__(reason)
        self.reason = reason


class _CappedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with a small ``range()`` and no way to build huge values."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def __init__(self) -> None:
        super().__init__(undefined=StrictUndefined, autoescape=False)
        self.globals = {"range": _small_range}

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:  # noqa: ANN401 - any template value
        """``*``, ``**`` and ``%`` on numbers of sane size only (no ``'x' * 10**9``)."""
        numbers = all(isinstance(x, int | float) and not isinstance(x, bool) for x in (left, right))
        if not numbers:
            msg = f"operator {operator} applies to numbers only"
            raise TemplateRejected(msg)
        if operator == "**" and (
            abs(right) > _MAX_EXPONENT or (abs(left) > 1 and log10(abs(left)) * right > _MAX_DIGITS)
        ):
            msg = "power too large (at most about 1e308)"
            raise TemplateRejected(msg)
        return super().call_binop(context, operator, left, right)


def _small_range(*args: int) -> range:
    r = range(*args)
    if len(r) > MAX_OUTPUT:
        msg = f"range of {len(r)} items (at most {MAX_OUTPUT})"
        raise TemplateRejected(msg)
    return r


_ENV: Final = _CappedSandbox()


def validate_template(text: str) -> None:
    """Accept `text` as a notification template, or raise why not.

    Raises:
        TemplateRejected: too long, a syntax error, an unknown variable, or an
            attribute or item access.
    """
    _check(text)


@lru_cache(maxsize=1024)
def _check(text: str) -> None:
    if len(text) > MAX_TEMPLATE:
        msg = f"template of {len(text)} characters (at most {MAX_TEMPLATE})"
        raise TemplateRejected(msg)
    try:
        _check_tree(text)
    except TemplateError as exc:
        msg = f"syntax error: {exc}"
        raise TemplateRejected(" ".join(msg.split())) from exc
    except RecursionError as exc:  # e.g. 990 nested parentheses fit in MAX_TEMPLATE
        msg = "nested too deeply"
        raise TemplateRejected(msg) from exc


def _check_tree(text: str) -> None:
    """Parse and walk the template (both recurse: the caller catches RecursionError)."""
    ast = _ENV.parse(text)
    unknown = meta.find_undeclared_variables(ast) - FIELDS - _BUILTINS
    if unknown:
        msg = (
            f"unknown field(s): {', '.join(sorted(unknown))} (allowed: {', '.join(sorted(FIELDS))})"
        )
        raise TemplateRejected(msg)
    for node in ast.find_all(nodes.Node):
        reason = _refusal(node)
        if reason:
            msg = f"{reason} (line {node.lineno})"
            raise TemplateRejected(msg)


def _refusal(node: nodes.Node) -> str | None:  # noqa: PLR0911 - one answer per construct
    """Why `node` may not be in a template, or None."""
    if isinstance(node, nodes.Getattr):
        loop = isinstance(node.node, nodes.Name) and node.node.name == "loop"
        if loop and node.attr in _LOOP_ATTRS:
            return None
        return "attribute access is not allowed"
    if isinstance(node, nodes.NSRef):
        return "attribute assignment is not allowed"
    if isinstance(node, _NOT_ALLOWED):
        name = {"Getitem": "item access", "Slice": "slicing"}.get(type(node).__name__)
        return f"{name or type(node).__name__.lower()} is not allowed"
    if isinstance(node, nodes.Filter) and node.name not in _FILTERS:
        return f"filter {node.name!r} is not allowed (allowed: {', '.join(sorted(_FILTERS))})"
    if isinstance(node, nodes.Call) and not (
        isinstance(node.node, nodes.Name) and node.node.name == "range"
    ):
        return "only range() may be called"
    if isinstance(node, nodes.For):
        if node.recursive:
            return "recursive loops are not allowed"
        if any(True for _ in node.find_all(nodes.For)):
            return "nested loops are not allowed"
    return None


def render(template: str | None, fields: Mapping[str, str | int | float | None]) -> str:
    """Render `template` (:data:`DEFAULT_TEMPLATE` when None) with the allowlisted `fields`.

    Fields outside :data:`FIELDS` are not passed; a missing or None field renders
    empty. The output is cut at :data:`MAX_OUTPUT` characters.

    Raises:
        TemplateRejected: the template is not valid, or failed while rendering.
    """
    text = DEFAULT_TEMPLATE if template is None else template
    _check(text)
    context = {name: "" if fields.get(name) is None else fields[name] for name in FIELDS}
    try:
        out: list[str] = []
        size = 0
        # Stream the output so that a long loop stops at the cap instead of running on.
        for chunk in _ENV.from_string(text).generate(context):
            out.append(chunk)
            size += len(chunk)
            if size > MAX_OUTPUT:
                break
    except TemplateRejected:
        raise
    except Exception as exc:  # any template error, e.g. a filter given a wrong type
        msg = f"render failed: {type(exc).__name__}: {exc}"
        raise TemplateRejected(" ".join(msg.split())[:300]) from exc
    return "".join(out)[:MAX_OUTPUT]
