"""Rows -> typed arrow tables (explicit schema, no object columns, key-value metadata) and the
idempotent Parquet writer: atomic, and skipped when the content is unchanged, so running the
analysis twice leaves byte-identical files."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from headsweep.atomic import write_with


def arrow_type(values: Iterable[Any]) -> pa.DataType:
    """One arrow type for a column of python values (None allowed): bool, int64, float64 or
    string; lists and mappings become JSON strings."""
    kinds = {type(v) for v in values if v is not None}
    if not kinds:
        return pa.string()
    if kinds == {bool}:
        return pa.bool_()
    if kinds <= {int}:
        return pa.int64()
    if kinds <= {int, float}:
        return pa.float64()
    return pa.string()


def _cell(value: Any, kind: pa.DataType) -> Any:
    if value is None:
        return None
    if kind == pa.string():
        return value if isinstance(value, str) else json.dumps(value)
    if kind == pa.float64():
        return float(value)
    return value


def to_table(
    rows: list[dict[str, Any]],
    fixed: Mapping[str, pa.DataType],
    meta: Mapping[str, str],
) -> pa.Table:
    """Rows -> arrow table: `fixed` columns first with their types, then the others sorted,
    each typed from its values."""
    columns = list(fixed)
    columns += sorted({k for row in rows for k in row} - set(fixed))
    fields = []
    for column in columns:
        kind = fixed.get(column) or arrow_type(row.get(column) for row in rows)
        fields.append(pa.field(column, kind))
    schema = pa.schema(fields, metadata=dict(meta))
    arrays = [
        pa.array([_cell(row.get(f.name), f.type) for row in rows], type=f.type) for f in fields
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def content_hash(table: pa.Table) -> str:
    """Hash of the data and the schema without the created_at stamp."""
    meta = {k: v for k, v in (table.schema.metadata or {}).items() if k != b"created_at"}
    digest = hashlib.sha256(
        json.dumps(sorted((k.decode(), v.decode()) for k, v in meta.items())).encode()
    )
    digest.update(str(table.schema.remove_metadata()).encode())
    for batch in table.to_batches():
        for column in batch.columns:
            digest.update(str(column.to_pylist()).encode())
    return digest.hexdigest()


def write_table(table: pa.Table, path: Path) -> bool:
    """Atomically write `table` unless the file already holds the same content. True if
    written."""
    digest = content_hash(table)
    if path.exists():
        try:
            old = pq.read_schema(path).metadata or {}
            if old.get(b"content_sha256", b"").decode() == digest:
                return False
        except (OSError, pa.ArrowInvalid):
            pass
    meta = {
        **(table.schema.metadata or {}),
        b"content_sha256": digest.encode(),
        b"created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()).encode(),
    }
    table = table.replace_schema_metadata(meta)
    write_with(path, lambda tmp: pq.write_table(table, tmp))
    return True
