"""Read logs and catalogues from Parquet or CSV, validating chunk by chunk.

`iter_log_chunks` streams validated canonical chunks, so a file larger than
memory is validated without being loaded whole; `load_log` keeps them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pushrl.envs.common.errors import LoggedDataError
from pushrl.envs.data.catalogue import Catalogue
from pushrl.envs.data.logged_data import LoggedData, catalogue_from_log
from pushrl.envs.data.schema import LogSchema
from pushrl.envs.data.validation import (
    UNSUBSCRIBE_OBSERVED,
    ResolvedColumns,
    resolve_features,
    validate_chunk,
)

DEFAULT_CHUNKSIZE = 1_000_000
FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def file_format(path: str | os.PathLike[str]) -> str:
    """'csv' or 'parquet' from the extension; refuses anything else and missing files."""
    p = Path(path)
    if not p.exists():
        raise LoggedDataError("file does not exist", expected="a path to a .csv or .parquet file", source=str(p))
    if p.is_dir():
        raise LoggedDataError("is a folder, not a file", expected="a .csv or .parquet file", source=str(p))
    suffix = "".join(p.suffixes[-2:]) if p.name.endswith(".csv.gz") else p.suffix.lower()
    fmt = FORMATS.get(suffix) or ("csv" if suffix == ".csv.gz" else None)
    if fmt is None:
        raise LoggedDataError(f"unsupported file extension {p.suffix!r}", expected=f"one of {sorted(FORMATS)}", source=str(p))
    if p.stat().st_size == 0:
        raise LoggedDataError("the file is empty (0 bytes)", expected="a header and at least one row", source=str(p))
    return fmt


def _refuse_duplicate_names(names: list[str], src: str) -> None:
    """A name given to two columns is refused (empty names are left to pandas, which numbers them)."""
    twice = list(dict.fromkeys(n for n in names if n and names.count(n) > 1))
    if twice:
        where = ", ".join(f"{n!r} at columns {[i for i, m in enumerate(names) if m == n]}" for n in twice[:5])
        raise LoggedDataError(f"duplicate column name(s) in the header: {where} (0-based)", column=twice[0],
                              expected="each column name once in the header: rename or drop the repeated column",
                              source=src)


def _csv_header(src: str, csv_kwargs: dict) -> list[str] | None:
    """The CSV header exactly as written (pandas renames a repeated `city` to `city.1`); None when the
    caller's csv options choose the names themselves."""
    if "header" in csv_kwargs or "names" in csv_kwargs:
        return None
    first = pd.read_csv(src, header=None, nrows=1, dtype=str, keep_default_na=False, **csv_kwargs)
    return [str(v) for v in first.iloc[0].tolist()] if len(first) else None


def read_table_chunks(path: str | os.PathLike[str], chunksize: int = DEFAULT_CHUNKSIZE, **csv_kwargs) -> Iterator[pd.DataFrame]:
    """Raw chunks of a CSV or Parquet file; a file that is not its format, or whose header names a column
    twice, is refused."""
    fmt = file_format(path)
    src = str(path)
    if fmt == "parquet":
        try:
            pf = pq.ParquetFile(src)
        except (pa.ArrowException, OSError) as exc:
            raise LoggedDataError(f"not a readable Parquet file ({exc})", expected="a Parquet file, as its extension says", source=src) from exc
        _refuse_duplicate_names(list(pf.schema_arrow.names), src)
        if pf.metadata.num_rows == 0:
            raise LoggedDataError("the log has no rows", expected="at least one push decision", source=src)
        for batch in pf.iter_batches(batch_size=chunksize):
            yield batch.to_pandas()
        return
    try:
        header = _csv_header(src, csv_kwargs)
        if header is not None:
            _refuse_duplicate_names(header, src)
        reader = pd.read_csv(src, chunksize=chunksize, **csv_kwargs)
        first = True
        for chunk in reader:
            if first and len(chunk) == 0:
                raise LoggedDataError("the log has no rows (header only)", expected="at least one push decision", source=src)
            first = False
            yield chunk
        if first:
            raise LoggedDataError("the log has no rows (header only)", expected="at least one push decision", source=src)
    except pd.errors.EmptyDataError as exc:
        raise LoggedDataError("the file has no columns", expected="a CSV header and rows", source=src) from exc
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, LoggedDataError):
            raise
        raise LoggedDataError(f"not a readable CSV file ({type(exc).__name__}: {str(exc)[:120]})",
                              expected="a UTF-8 CSV file, as its extension says", source=src) from exc


def load_catalogue(path: str | os.PathLike[str], id_column: str = "action", **csv_kwargs) -> Catalogue:
    """Read a promotion catalogue (id column + feature columns).

    The id column is `id_column` (the log's action column name); a catalogue without that column but with
    one named `action` uses that one.
    """
    frame = pd.concat(list(read_table_chunks(path, **csv_kwargs)), ignore_index=True)
    if id_column not in frame.columns and "action" in frame.columns:
        id_column = "action"
    return Catalogue.from_frame(frame, id_column=id_column, source=str(path))


def _collect_ids(chunks: Iterable[pd.DataFrame], schema: LogSchema, source: str) -> Catalogue:
    """One pass over the action column of raw chunks: a feature-less catalogue of the ids seen."""
    seen: set = set()
    for chunk in chunks:
        if schema.action not in chunk.columns:
            raise LoggedDataError("missing required column", column=schema.action, expected="a promotion id column",
                                  source=source)
        seen.update(chunk[schema.action].dropna().unique().tolist())
    return catalogue_from_log(pd.DataFrame({schema.action: list(seen)}), schema, source)


def _validate_chunks(raw_chunks: Iterable[pd.DataFrame], schema: LogSchema, catalogue: Catalogue, source: str
                     ) -> Iterator[tuple[pd.DataFrame, ResolvedColumns, Catalogue]]:
    resolved: ResolvedColumns | None = None
    offset = 0
    for raw in raw_chunks:
        if resolved is None:
            resolved = resolve_features(raw, schema, source)
        yield validate_chunk(raw.reset_index(drop=True), schema, resolved, catalogue, source, offset), resolved, catalogue
        offset += len(raw)


def iter_log_chunks(
    path: str | os.PathLike[str],
    schema: LogSchema | None = None,
    catalogue: Catalogue | None = None,
    chunksize: int = DEFAULT_CHUNKSIZE,
) -> Iterator[tuple[pd.DataFrame, ResolvedColumns, Catalogue]]:
    """Validated canonical chunks (row index = row number in the file), bounded memory.

    Without a catalogue the file is streamed twice: once for the ids, once to validate."""
    schema = schema or LogSchema()
    if catalogue is None:
        catalogue = _collect_ids(read_table_chunks(path, chunksize), schema, str(path))
    yield from _validate_chunks(read_table_chunks(path, chunksize), schema, catalogue, str(path))


def load_log(
    path: str | os.PathLike[str],
    schema: LogSchema | None = None,
    catalogue: Catalogue | str | os.PathLike[str] | None = None,
    n_positions: int | None = None,
    chunksize: int = DEFAULT_CHUNKSIZE,
    name: str | None = None,
) -> LoggedData:
    """Load and validate a whole log (CSV or Parquet). Raises LoggedDataError."""
    schema = schema or LogSchema()
    if isinstance(catalogue, (str, os.PathLike)):
        catalogue = load_catalogue(catalogue, id_column=schema.action)
    if catalogue is None:  # the ids come from the rows: read the file once, keep the raw chunks for validation
        pending = list(read_table_chunks(path, chunksize))
        catalogue = _collect_ids(pending, schema, str(path))
        raw_chunks: Iterable[pd.DataFrame] = (pending.pop(0) for _ in range(len(pending)))  # freed as validated
    else:
        raw_chunks = read_table_chunks(path, chunksize)
    chunks = list(_validate_chunks(raw_chunks, schema, catalogue, str(path)))  # never empty: empty files are refused
    parts = [chunk for chunk, _, _ in chunks]
    _, resolved, cat = chunks[-1]
    frame = parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)
    return LoggedData.from_canonical(frame, cat, resolved, n_positions, name or Path(path).stem, str(path),
                                     schema.no_push_action)


def save_log(data: LoggedData, path: str | os.PathLike[str]) -> Path:
    """Write a LoggedData's rows to Parquet (atomically) in a form `load_log` reads back."""
    from pushrl.envs.common.atomic import write_with

    frame = data.frame.drop(columns=["action_index", UNSUBSCRIBE_OBSERVED], errors="ignore")
    if not data.columns.has_propensity and "propensity" in frame:
        frame = frame.drop(columns=["propensity"])
    return write_with(path, lambda tmp: frame.to_parquet(tmp, index=False, engine="pyarrow"))

