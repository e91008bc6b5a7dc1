"""Read raw tables into harmonised :class:`~healthtransfer.data.dataset.Dataset` objects.

Built-in sources are listed in :data:`BUILTIN`; ``uci_heart`` ships inside the package, the
others are read from a data directory (``data_dir=`` or the ``HEALTHTRANSFER_DATA``
environment variable) laid out as ``../shared/data`` is. Nothing is ever downloaded.

Example
-------
>>> ds = load_dataset("uci_heart")
>>> ds.counts().loc["va", "n"]
np.int64(200)
"""

from __future__ import annotations

import csv
import io
import os
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from ..errors import UserInputError
from .dataset import Dataset
from .harmonise import harmonise
from .schema import DatasetSchema, FeatureSpec, load_schema

__all__ = ["BUILTIN", "load_dataset", "load_table", "resolve_data_dir", "builtin_schema"]

DATA_ENV = "HEALTHTRANSFER_DATA"

UCI_COLUMNS = [
    "age", "sex", "cp", "trestbps", "chol", "fbs", "restecg", "thalach", "exang",
    "oldpeak", "slope", "ca", "thal", "num",
]
UCI_SITES = ("cleveland", "hungarian", "switzerland", "va")


def builtin_schema(name: str) -> DatasetSchema:
    """The schema shipped for a built-in source."""
    ref = resources.files("healthtransfer.data").joinpath("schemas", f"{name}.toml")
    with resources.as_file(ref) as path:
        return load_schema(path)


def resolve_data_dir(data_dir: str | Path | None, dataset: str) -> Path:
    """Where the staged datasets live: the argument, else ``$HEALTHTRANSFER_DATA``."""
    chosen = data_dir or os.environ.get(DATA_ENV)
    if not chosen:
        raise UserInputError(
            f"dataset '{dataset}' is not bundled with the package and no data directory was given",
            where=f"dataset '{dataset}'",
            fix=f"pass --data-dir DIR (the folder holding '{dataset}' files) or set {DATA_ENV}",
        )
    path = Path(chosen).expanduser()
    if not path.is_dir():
        raise UserInputError(
            "the data directory does not exist",
            where=str(path),
            fix=f"pass --data-dir pointing at the folder that holds the staged datasets, or set {DATA_ENV}",
        )
    return path



def _demo_tables_folder(data_dir: str | Path, name: str, tables, title: str) -> Path:
    """The folder of a staged PhysioNet demo (``DATA_DIR/NAME/`` or ``DATA_DIR`` itself) once every
    ``TABLE.csv.gz`` is there; a missing table is an error that says which and where."""
    folder = Path(data_dir).expanduser()
    if (folder / name).is_dir():
        folder = folder / name
    for table in tables:
        if not (folder / f"{table}.csv.gz").is_file():
            raise UserInputError(
                f"the {title} demo table '{table}.csv.gz' is missing",
                where=str(folder),
                fix=f"pass --data-dir pointing at the folder that holds '{name}/' (as ../shared/data does)",
            )
    return folder

def _finish(raw: pd.DataFrame, schema: DatasetSchema, *, source: str, class_names=None,
            extra=None, features=None, categorical=None) -> Dataset:
    table, report = harmonise(raw, schema, source=source)
    feats = features or schema.feature_names
    cats = categorical if categorical is not None else [c for c in schema.categorical if c in feats]
    keep = [*feats, schema.domain, schema.label]
    for c in (schema.group, schema.reference_score):
        if c and c not in keep:
            keep.append(c)
    table = table[keep].reset_index(drop=True)
    table[schema.domain] = table[schema.domain].astype(str)
    return Dataset(
        name=schema.name, frame=table, label=schema.label, domain=schema.domain,
        features=list(feats), categorical=list(cats), report=report, schema=schema,
        group=schema.group, reference_score=schema.reference_score,
        class_names=list(class_names if class_names is not None else sorted(table[schema.label].unique())),
        license=schema.license, citation=schema.citation, extra=extra or {},
    )


# The ten UCI heart features every hospital records (the heart-shift protocol's, the demo study's).
HEART_FEATURES = ["age", "sex", "cp", "trestbps", "chol", "fbs", "restecg", "thalach", "exang", "oldpeak"]
HEART_CATEGORICAL = ["cp", "restecg"]


def load_uci_heart(data_dir: str | Path | None = None) -> Dataset:
    """UCI Heart Disease, the four hospitals, label ``disease = num > 0``.

    The files ship inside the package; ``data_dir`` (optional) reads a copy laid out as
    ``DATA_DIR/uci_heart/<site>.data`` instead.
    """
    frames = []
    for site in UCI_SITES:
        if data_dir is not None:
            path = Path(data_dir) / "uci_heart" / f"{site}.data"
            text = path.read_text(encoding="ascii")
        else:
            text = resources.files("healthtransfer.data").joinpath("_files", "uci_heart", f"{site}.data").read_text(encoding="ascii")
        df = pd.read_csv(io.StringIO(text), header=None, names=UCI_COLUMNS, na_values="?")
        df.insert(0, "site", site)
        frames.append(df)
    raw = pd.concat(frames, ignore_index=True)
    raw["disease"] = (raw["num"] > 0).astype(int)
    return _finish(raw, builtin_schema("uci_heart"), source="uci_heart", class_names=[0, 1])


# Other built-in sources register themselves here (see _eicu.py, _mimic.py, _wearable.py).
BUILTIN: dict[str, Callable[..., Dataset]] = {"uci_heart": load_uci_heart}


def _register_optional() -> None:
    for mod in ("_eicu", "_mimic", "_wearable"):
        try:
            module = __import__(f"{__package__}.{mod}", fromlist=["LOADERS"])
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.endswith(mod):
                continue
            raise
        BUILTIN.update(getattr(module, "LOADERS", {}))


def load_dataset(name: str, data_dir: str | Path | None = None, **options: Any) -> Dataset:
    """Load a built-in source by name. ``options`` go to the source (e.g. ``domain_by``)."""
    _register_optional()
    if name not in BUILTIN:
        raise UserInputError(
            f"unknown dataset '{name}'",
            where="dataset",
            fix=f"use one of {sorted(BUILTIN)}, or give `path = \"your.csv\"` in the study",
        )
    if name == "uci_heart":
        return BUILTIN[name](data_dir=data_dir, **options)
    return BUILTIN[name](data_dir=resolve_data_dir(data_dir, name), **options)


# --------------------------------------------------------------------------- user tables
def _read_text_table(path: Path, delimiter: str | None, encoding: str) -> pd.DataFrame:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserInputError(f"cannot read the file ({exc.strerror})", where=str(path),
                             fix="check the path in the study file (relative paths resolve against it)") from None
    if not raw.strip():
        raise UserInputError("the file is empty", where=str(path), fix="export the table again with a header row and data rows")
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise UserInputError(
            f"the file is not valid {encoding} text (bad byte at offset {exc.start})",
            where=str(path),
            fix="save it as UTF-8, or set `encoding = \"latin-1\"` (or the right one) under [data]",
        ) from None
    text = text.lstrip("\ufeff")
    if not text.strip():
        raise UserInputError("the file is empty", where=str(path), fix="export the table again with a header row and data rows")
    header = next(line for line in text.splitlines() if line.strip())
    if delimiter is None:
        try:
            delimiter = csv.Sniffer().sniff(header, delimiters=",;\t|").delimiter
        except csv.Error:
            delimiter = ","
    names = next(csv.reader([header], delimiter=delimiter))
    names = [n.strip() for n in names]
    if len(names) < 2:
        raise UserInputError(
            "the header has a single column, so the delimiter is probably wrong",
            where=str(path),
            fix="save the file comma-separated, or set `delimiter = \";\"` (or the right one) under [data]",
        )
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UserInputError(f"duplicate column names {dup}", where=str(path),
                             fix="rename the columns so each name appears once")
    _check_widths(text, delimiter, len(names), path)
    try:
        df = pd.read_csv(io.StringIO(text), sep=delimiter, skipinitialspace=True, index_col=False,
                         na_values=["", "NA", "NaN", "nan", "?", "NULL", "null"], keep_default_na=False)
    except (pd.errors.ParserError, ValueError) as exc:
        line = str(exc).split("line")[-1].split(",")[0].strip() if "line" in str(exc) else "?"
        raise UserInputError(f"rows do not all have {len(names)} fields (first bad line {line})",
                             where=str(path), fix="check the delimiter and quoting of the export") from None
    df.columns = [str(c).strip() for c in df.columns]
    return df


def _check_widths(text: str, delimiter: str, n_names: int, path: Path) -> None:
    """Refuse rows wider than the header (pandas would silently turn the extra leading fields
    into an index, shifting every column) and files whose rows mostly use another delimiter."""
    try:
        reader = csv.reader(io.StringIO(text), delimiter=delimiter)
        widths = [(reader.line_num, len(row)) for row in reader if any(f.strip() for f in row)][1:]
    except csv.Error:
        return  # let pandas report the quoting problem
    if not widths:
        raise UserInputError("the file has a header but no data rows", where=str(path),
                             fix="export the table again with its data rows")
    wide = next(((line, n) for line, n in widths if n > n_names), None)
    if wide:
        raise UserInputError(
            f"line {wide[0]} has {wide[1]} fields but the header has {n_names}",
            where=str(path),
            fix="check the delimiter and quoting of the export: a decimal comma in a comma-separated file, "
            "or an unquoted delimiter inside a value, adds fields (set `delimiter` under [data] if needed)",
        )
    short = [line for line, n in widths if n < n_names]
    if len(short) > len(widths) / 2:
        raise UserInputError(
            f"{len(short)} of {len(widths)} rows have fewer fields than the header's {n_names} (first on line {short[0]})",
            where=str(path),
            fix=f"the rows seem to use another delimiter than the header's {delimiter!r}, or a quote is not closed: "
            "export the file again with one delimiter and balanced quotes, or set `delimiter` under [data]",
        )


def read_table(path: str | Path, delimiter: str | None = None, encoding: str = "utf-8") -> pd.DataFrame:
    """Read a CSV (any delimiter, optionally gzip'd) or Parquet file with checked errors."""
    path = Path(path)
    if path.suffix.lower() in {".parquet", ".pq"}:
        try:
            df = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises many types; all mean "not a readable parquet"
            raise UserInputError(f"cannot read it as Parquet ({type(exc).__name__})", where=str(path),
                                 fix="check that the file is a complete Parquet file") from None
        names = list(map(str, df.columns))
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise UserInputError(f"duplicate column names {dup}", where=str(path), fix="rename the columns")
        if df.empty:
            raise UserInputError("the table has no rows", where=str(path), fix="export the data again")
        return df
    if path.suffix.lower() == ".gz":
        import gzip

        try:
            data = gzip.decompress(path.read_bytes())
        except (OSError, EOFError) as exc:
            raise UserInputError(f"cannot decompress it ({exc})", where=str(path), fix="check the gzip file") from None
        tmp = path.with_suffix("")
        return _read_bytes_table(data, tmp.name, delimiter, encoding, shown=str(path))
    return _read_text_table(path, delimiter, encoding)


def _read_bytes_table(data: bytes, name: str, delimiter, encoding, shown: str) -> pd.DataFrame:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / name
        p.write_bytes(data)
        try:
            return _read_text_table(p, delimiter, encoding)
        except UserInputError as exc:
            raise UserInputError(exc.what, where=shown, fix=exc.fix) from None


def load_table(
    path: str | Path,
    *,
    domain: str,
    label: str,
    positive: Any = None,
    features: list[str] | None = None,
    categorical: list[str] | None = None,
    group: str | None = None,
    reference_score: str | None = None,
    schema: str | Path | DatasetSchema | None = None,
    delimiter: str | None = None,
    encoding: str = "utf-8",
    name: str | None = None,
) -> Dataset:
    """Load any CSV or Parquet table as a harmonised dataset.

    Features default to every column except the domain, label, group and reference score;
    categorical features default to the non-numeric ones. An optional site ``schema`` (TOML
    path or object) adds units, ranges, code maps and sentinels per site.
    """
    path = Path(path)
    df = read_table(path, delimiter=delimiter, encoding=encoding)
    where = str(path)
    for key, col in (("domain", domain), ("label", label), ("group", group), ("reference_score", reference_score)):
        if col is not None and col not in df.columns:
            raise UserInputError(f"the column '{col}' named by `{key}` is not in the file", where=where,
                                 fix=f"set `{key}` to one of the file's columns: {list(df.columns)[:20]}")
    if domain == label:
        raise UserInputError(f"`domain` and `label` both name the column '{label}'", where=where,
                             fix="set `domain` to the column naming each row's site and `label` to the outcome")
    n_sites = int(df[domain].nunique())
    if n_sites > 20 and n_sites > len(df) / 2:
        raise UserInputError(
            f"the domain column '{domain}' has {n_sites} distinct values in {len(df)} rows, so it does not name sites",
            where=where, fix="set `domain` to the column that names each row's site (hospital, region, device)",
        )
    special = {c for c in (domain, label, group, reference_score) if c}
    if features is None:
        features = [c for c in df.columns if c not in special]
    absent = [f for f in features if f not in df.columns]
    if absent:
        raise UserInputError(f"features {absent} are not in the file", where=where,
                             fix=f"remove them from `features` or add the columns; the file has {list(df.columns)[:20]}")
    if not features:
        raise UserInputError("no feature columns", where=where, fix="list the predictors under `features`")
    bad_special = [f for f in features if f in special]
    if bad_special:
        raise UserInputError(f"{bad_special} cannot be a feature: it is the domain, label, group or reference score",
                             where=where, fix="remove it from `features`")
    if df[label].isna().any():
        n = int(df[label].isna().sum())
        raise UserInputError(f"{n} rows have no label in '{label}'", where=where,
                             fix="drop unlabelled rows or fill in their outcome")
    if isinstance(schema, (str, Path)):
        schema = load_schema(schema)
    if categorical is None:
        categorical = [f for f in features if not pd.api.types.is_numeric_dtype(df[f])
                       and not _mostly_numeric(df[f])]
        if schema is not None:
            categorical = sorted(set(categorical) | {f for f in schema.categorical if f in features}, key=features.index)
    unknown_cat = [c for c in categorical if c not in features]
    if unknown_cat:
        raise UserInputError(f"categorical columns {unknown_cat} are not features", where=where,
                             fix="list only feature columns under `categorical`")
    specs = []
    for f in features:
        declared = schema.feature(f) if schema is not None else None
        if declared is not None:
            specs.append(declared.model_copy(update={"kind": "categorical"} if f in categorical else {}))
        else:
            specs.append(FeatureSpec(name=f, kind="categorical" if f in categorical else "numeric"))
    y_raw = df[label]
    classes = sorted(y_raw.unique().tolist(), key=str)
    if len(classes) < 2:
        raise UserInputError(f"the label '{label}' has a single class in the whole file", where=where,
                             fix="check the label column: a model needs at least two outcomes")
    if positive is not None:
        if not (y_raw.astype(str) == str(positive)).any():
            raise UserInputError(f"the positive class {positive!r} never occurs in '{label}'", where=where,
                                 fix=f"set `positive` to one of {[str(c) for c in classes][:10]}")
        if len(classes) > 2:
            y = (y_raw.astype(str) == str(positive)).astype(int)
            class_names = [f"not {positive}", str(positive)]
        else:
            y = (y_raw.astype(str) == str(positive)).astype(int)
            other = [c for c in classes if str(c) != str(positive)][0]
            class_names = [other, positive]
    elif len(classes) == 2 and set(map(str, classes)) <= {"0", "1", "0.0", "1.0", "False", "True"}:
        y = y_raw.astype(float).astype(int)
        class_names = [0, 1]
    else:
        codes = {c: i for i, c in enumerate(classes)}
        y = y_raw.map(codes).astype(int)
        class_names = classes
    df = df.copy()
    df[label] = y.to_numpy()
    sch = DatasetSchema(
        name=name or path.stem, label=label, domain=domain, group=group, reference_score=reference_score,
        features=specs, sites=(schema.sites if schema is not None else {}),
    )
    if reference_score:
        ref = pd.to_numeric(df[reference_score], errors="coerce")
        bad = df[reference_score].notna() & ref.isna()
        if bad.any():
            raise UserInputError(f"{int(bad.sum())} values of the reference score '{reference_score}' are not numbers",
                                 where=where, fix="the reference score must be a probability in [0, 1] or empty")
        ref = ref.where((ref >= 0) & (ref <= 1))
        df[reference_score] = ref
    return _finish(df, sch, source=where, class_names=class_names, features=list(features),
                   categorical=list(categorical))


def _mostly_numeric(s: pd.Series) -> bool:
    """True if the column is numbers written as text; False if it has real words."""
    if s.dropna().empty:
        return True
    num = pd.to_numeric(s, errors="coerce")
    return bool(num.notna().mean() / max(s.notna().mean(), 1e-12) >= 0.95)
