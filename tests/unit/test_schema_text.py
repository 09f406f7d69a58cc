from __future__ import annotations

from tmiot.db import STATEMENT_SEPARATOR, schema_statements, schema_text


def test_statements_split_on_separator_lines_only() -> None:
    text = (
        "CREATE TABLE a (x int);\n-- ;;\n-- just a comment\n-- ;;\n"
        "DO $$ BEGIN\n-- ;; not alone\nEND $$;\n"
    )
    assert schema_statements(text) == [
        "CREATE TABLE a (x int);",
        "DO $$ BEGIN\n-- ;; not alone\nEND $$;",
    ]


def test_schema_statements_stay_small_for_size_limited_servers() -> None:
    # TimescaleDB-in-WASM crashes on query messages of a few tens of KB.
    statements = schema_statements()
    assert len(statements) > 30
    assert max(len(s.encode()) for s in statements) < 8_000


def test_every_statement_of_the_file_is_kept() -> None:
    text = schema_text()
    pieces = list(text.split("\n" + STATEMENT_SEPARATOR + "\n"))
    assert len(schema_statements()) == len(pieces)
