"""File prediction: stream a csv / jsonl / parquet file through a Predictor in chunks, write it back with
the columns of the model's head: `predicted_label` and `score` (single-label), `predicted_labels` and a
`score_<label>` per label (multi-label), `prediction` (regression).

Only one chunk (default 1,024 rows) is in memory at a time, so a file larger than memory works. The output is
written to a temporary name and renamed into place at the end: a failed run never leaves a half file behind.
Every problem with the file (type, emptiness, missing column, unparsable content) is a PredictError found before
the model loads where possible.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from engine.errors import PredictError

Progress = Callable[[float, str], None]


def _noop(fraction: float, desc: str) -> None:
    pass


FILE_TYPES = {".csv": "csv", ".jsonl": "jsonl", ".parquet": "parquet"}
TEXT_GUESSES = ("text", "sentence", "review", "content", "document", "body")
PREVIEW_ROWS = 20


@dataclass
class FileResult:
    """What predict_file wrote."""

    output: Path
    rows: int
    seconds: float
    text_column: str
    preview: object  # pandas.DataFrame: the first PREVIEW_ROWS rows of the output


def file_kind(path: str | os.PathLike, field: str = "file") -> str:
    """'csv', 'jsonl' or 'parquet' from the file name, or a PredictError naming the accepted types."""
    suffix = Path(path).suffix.lower()
    if suffix not in FILE_TYPES:
        raise PredictError(f"{field}: unsupported file type '{suffix or '(none)'}' of '{Path(path).name}'; use "
                           f"{', '.join(FILE_TYPES)}")
    return FILE_TYPES[suffix]


def pick_text_column(df, wanted: str | None, filename: str) -> str:
    """The text column: `wanted` if given (it must exist), else a usual name, else the longest string column."""
    columns = [str(c) for c in df.columns]
    shown = ", ".join(columns[:20])
    if wanted and wanted.strip():
        if wanted.strip() in columns:
            return wanted.strip()
        raise PredictError(f"text_column: '{wanted.strip()}' is not a column of '{filename}' (columns: {shown}); "
                           "pick one of them")
    lower = {c.lower(): c for c in columns}
    for guess in TEXT_GUESSES:
        if guess in lower:
            return lower[guess]
    lengths = {c: df[c].map(lambda v: len(v) if isinstance(v, str) else 0).mean() for c in df.columns}
    best = max(lengths, key=lengths.get) if lengths else None
    if best is None or lengths[best] == 0:
        raise PredictError(f"text_column: '{filename}' has no text column (columns: {shown}); name the column "
                           "that holds the text")
    return str(best)


def _read_chunks(path: Path, kind: str, rows: int) -> tuple[Iterator, callable]:
    """(iterator of DataFrame chunks, function giving the fraction read so far)."""
    import pandas as pd

    size = path.stat().st_size
    if kind == "parquet":
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(path)
        except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a bad file
            raise PredictError(f"file: '{path.name}' is not a readable parquet file ({str(e)[:120]})") from None
        total, done = max(pf.metadata.num_rows, 1), [0]

        def parquet_chunks():
            for batch in pf.iter_batches(batch_size=rows):
                done[0] += batch.num_rows
                yield batch.to_pandas()

        return parquet_chunks(), lambda: done[0] / total

    f = open(path, "rb")  # binary: tell() stays usable while reading, for progress

    def csv_chunks():
        with f:
            try:
                # every column as text exactly as written ("NA" stays "NA"), so the output round-trips the input
                yield from pd.read_csv(f, chunksize=rows, dtype=str, keep_default_na=False, encoding="utf-8")
            except UnicodeDecodeError:
                raise PredictError(f"file: '{path.name}' is not UTF-8 text; re-save it as UTF-8") from None
            except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as e:
                msg = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
                raise PredictError(f"file: could not read '{path.name}' as CSV ({msg})") from None

    def jsonl_chunks():
        with f:
            records = []
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    raise PredictError(f"file: line {lineno} of '{path.name}' is not valid JSON; JSONL needs one "
                                       "JSON object per line") from None
                if not isinstance(record, dict):
                    raise PredictError(f"file: line {lineno} of '{path.name}' is not a JSON object")
                records.append(record)
                if len(records) == rows:
                    yield pd.DataFrame.from_records(records)
                    records = []
            if records:
                yield pd.DataFrame.from_records(records)

    return (csv_chunks() if kind == "csv" else jsonl_chunks()), lambda: (f.tell() if not f.closed else size) / size


class _Writer:
    """Appends chunks to a csv / jsonl / parquet file."""

    def __init__(self, path: Path, kind: str):
        self.path, self.kind, self.first = path, kind, True
        self.parquet = None
        self.f = None if kind == "parquet" else open(path, "w", encoding="utf-8", newline="")

    def write(self, df) -> None:
        if self.kind == "csv":
            df.to_csv(self.f, index=False, header=self.first)
        elif self.kind == "jsonl":
            text = df.to_json(orient="records", lines=True, force_ascii=False)
            self.f.write(text if text.endswith("\n") else text + "\n")
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(df, preserve_index=False)
            if self.parquet is None:
                self.parquet = pq.ParquetWriter(self.path, table.schema)
            else:
                try:
                    table = table.cast(self.parquet.schema)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
                    raise PredictError("file: column types change between rows; write csv or jsonl output "
                                       "instead") from None
            self.parquet.write_table(table)
        self.first = False

    def close(self) -> None:
        if self.f:
            self.f.close()
        if self.parquet:
            self.parquet.close()


def _as_text(value):
    if value is None or (isinstance(value, float) and value != value):  # None / NaN: nothing to classify
        return None
    return value if isinstance(value, str) else str(value)


def predict_file(predictor, name: str, input_path: str | os.PathLike, output_path: str | os.PathLike | None = None,
                 text_column: str | None = None, revision: str | None = "main", *, chunk_rows: int = 1024,
                 progress: Progress = _noop, max_length: int | None = None,
                 precision: str | None = None) -> FileResult:
    """Write `input_path` with the head's prediction columns to `output_path` (default: <stem>.predictions.ext).

    Rows with an empty text get an empty label and no score. Progress goes to `progress(fraction, message)`.
    """
    if input_path is None or not str(input_path).strip():
        raise PredictError("file: none given; upload a .csv, .jsonl or .parquet file")
    src = Path(input_path)
    kind = file_kind(src)
    if not src.is_file():
        raise PredictError(f"file: '{src}' not found; check the path")
    if src.stat().st_size == 0:
        raise PredictError(f"file: '{src.name}' is empty; it needs a header (or JSON keys) and at least one row")
    out = Path(output_path) if output_path else src.with_name(f"{src.stem}.predictions{src.suffix}")
    out_kind = file_kind(out, "output")
    if out.resolve() == src.resolve():
        raise PredictError("output: must differ from the input file")
    chunks, fraction = _read_chunks(src, kind, chunk_rows)
    first = next(chunks, None)
    if first is None or len(first) == 0:
        raise PredictError(f"file: '{src.name}' has no rows; add data below the header")
    column = pick_text_column(first, text_column, src.name)
    lm = predictor.load(name, revision, progress)

    import itertools

    import pandas as pd

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    writer = _Writer(tmp, out_kind)
    rows, preview, t0 = 0, [], time.perf_counter()
    try:
        for chunk in itertools.chain([first], chunks):
            texts = [_as_text(v) for v in chunk[column].tolist()]
            scores = predictor.probabilities(lm, texts, max_length=max_length, precision=precision)
            columns = lm.head.file_columns(scores, lm.labels)  # the head says what a prediction is
            chunk = chunk.drop(columns=[c for c in columns if c in chunk.columns])
            for name, values in columns.items():
                numbers = all(v is None or isinstance(v, float) for v in values)
                # numbers stay numbers with gaps (rows without text) in every output format
                chunk[name] = pd.array(values, dtype="Float64") if numbers else values
            writer.write(chunk)
            if rows < PREVIEW_ROWS:
                preview.append(chunk.head(PREVIEW_ROWS - rows))
            rows += len(chunk)
            progress(min(fraction(), 1.0), f"predicted {rows:,} rows")
        writer.close()
        os.replace(tmp, out)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    return FileResult(out, rows, time.perf_counter() - t0, column, pd.concat(preview, ignore_index=True))
