"""Reading a Parquet dataset (a file or a directory of files) in bounded memory.

Batches are read file by file and row group by row group, one background thread at most two
batches ahead (pyarrow's dataset scanner reads far ahead of a slow consumer: gigabytes on a
large dataset). The public names are re-exported by :mod:`healthtransfer.data.streaming`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .schema import DatasetSchema

__all__ = ["iter_batches", "streaming_site_counts"]


def _dataset(path):
    import pyarrow.dataset as pads

    return pads.dataset(str(path), format="parquet")


def _file_batches(ds, columns: list[str] | None, batch_rows: int):
    """The dataset's batches, file by file and row group by row group (each row group cut into
    ``batch_rows``-row batches), conformed to the dataset's schema: a column a file lacks is
    all-null. Only what one batch needs is decoded at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    target = ds.schema if columns is None else pa.schema([ds.schema.field(c) for c in columns])
    for f in ds.files:
        with ds.filesystem.open_input_file(f) as fh:
            pf = pq.ParquetFile(fh, pre_buffer=False)
            have = set(pf.schema_arrow.names)
            cols = [c for c in target.names if c in have]
            for rg in range(pf.num_row_groups):
                for batch in pf.iter_batches(batch_size=int(batch_rows), row_groups=[rg], columns=cols,
                                             use_threads=True):
                    if batch.num_rows == 0:
                        continue
                    if batch.schema != target:
                        batch = pa.RecordBatch.from_arrays(
                            [_cast(batch, fl, f) if fl.name in have
                             else pa.nulls(batch.num_rows, fl.type) for fl in target], schema=target)
                    yield batch


def _cast(batch, field, path):
    """One column cast to the dataset's type; pyarrow's own message can quote a value, so the
    error names only the file, the column and the two types."""
    import pyarrow as pa

    col = batch.column(field.name)
    try:
        return col.cast(field.type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        from ..errors import UserInputError

        raise UserInputError(f"column '{field.name}' holds {col.type} in {Path(str(path)).name} but {field.type} "
                             "in the other files", where=str(path),
                             fix="write the column with one type in every Parquet file") from None


def _prefetch(batches, depth: int = 2):
    """Iterate ``batches`` in a background thread, at most ``depth`` batches ahead: reading and
    decoding (which release the GIL) overlap with the caller's work, and memory stays bounded
    (pyarrow's own scanner reads ahead much further when the consumer is slower)."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            for item in batches:
                if not put(item):
                    return
            put(done)
        except BaseException as exc:  # handed to the consumer
            put(_Failure(exc))

    t = threading.Thread(target=work, name="healthtransfer-parquet-reader", daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        stop.set()
        t.join(timeout=10)


@dataclass
class _Failure:
    exc: BaseException


def _arrow_batches(path, columns=None, batch_rows: int = 65_536, progress: bool = False,
                   label: str | None = None):
    """The non-empty record batches of the dataset (pyarrow), optionally with a progress bar."""
    ds = _dataset(path)
    if columns is not None:
        names = set(ds.schema.names)
        columns = [c for c in dict.fromkeys(columns) if c in names]
    bar = None
    if progress:
        from rich.console import Console
        from rich.progress import Progress

        # on stderr, so that a command's output (e.g. JSON on stdout) stays clean
        bar = Progress(console=Console(stderr=True), transient=True)
        bar.start()
        task = bar.add_task(label or f"reading {Path(str(path)).name}", total=ds.count_rows())
    try:
        for batch in _prefetch(_file_batches(ds, columns, batch_rows)):
            if bar is not None:
                bar.advance(task, batch.num_rows)
            yield batch
    finally:
        if bar is not None:
            bar.stop()


def iter_batches(path, columns=None, batch_rows: int = 65_536, progress: bool = False):
    """Yield the Parquet dataset at ``path`` (a file or a directory of files) as pandas frames
    of at most ``batch_rows`` rows; ``columns`` restricts the columns read (missing names are
    ignored)."""
    for batch in _arrow_batches(path, columns, batch_rows, progress):
        yield batch.to_pandas()


def streaming_site_counts(path, domain: str, *, batch_rows: int = 1_000_000,
                          progress: bool = False) -> dict[str, int]:
    """Rows per value of the ``domain`` column (as text, in first-seen order; missing values
    under ``None``), reading only that column."""
    import pyarrow.compute as pc

    counts: dict = {}
    for batch in _arrow_batches(path, [domain], batch_rows, progress, "counting rows per site"):
        if domain not in batch.schema.names:
            return {}
        for item in pc.value_counts(batch.column(domain)).to_pylist():
            v = item["values"]
            key = None if v is None else str(v)
            counts[key] = counts.get(key, 0) + int(item["counts"])
    return counts


def _schema_columns(schema: DatasetSchema, path) -> list[str]:
    names = set(_dataset(path).schema.names)
    cols = [schema.domain, schema.label, *schema.feature_names]
    for site in schema.sites.values():
        cols.extend(site.rename)
    return [c for c in dict.fromkeys(cols) if c in names]


def _restrict(schema: DatasetSchema, features: list[str]) -> DatasetSchema:
    """``schema`` with only ``features`` (the site rules are kept as they are)."""
    keep = set(features)
    return schema.model_copy(update={"features": [f for f in schema.features if f.name in keep]})
