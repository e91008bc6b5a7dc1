"""Malformed input through every user-facing entry point (CLI `run`, CLI `data inspect`, and
the Python API): each must fail with one paragraph that names the file, column or key and says
how to fix it, exit 2, print no traceback and no patient value, and leave no output behind.

Every generated data file carries a few distinctive patient values (``MARKERS``); no error
message may contain them.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from healthtransfer.cli import app
from healthtransfer.errors import UserInputError
from healthtransfer.study import load_study
from healthtransfer.study.run import run_study

SITES = ("a", "b", "c")
NUMERIC = ("age", "chol", "bp")
FEATURES = (*NUMERIC, "smoker")
# Distinctive patient values planted in every data file: they must never reach a message.
MARKERS = {("age", 1): 987.654321, ("chol", 40): 4242.4242, ("age", 70): 123.456789}
MARKER_TEXT = ("987.654321", "987.65", "4242.4242", "123.456789")

FAST = settings(max_examples=10, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# --------------------------------------------------------------------------- builders
def make_frame(n: int = 30, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for s in SITES:
        for i in range(n):
            rows.append({
                "site": s,
                "age": round(float(rng.normal(60, 10)), 1),
                "chol": round(float(rng.normal(220, 40)), 1),
                "bp": int(rng.integers(90, 180)),
                "smoker": str(rng.choice(["never", "former", "current"])),
                "outcome": i % 2,
            })
    df = pd.DataFrame(rows)
    for (col, row), value in MARKERS.items():
        df.loc[row, col] = value
    return df


def study_toml(*, study=None, data=None, transfer=None, drop_sections=()) -> str:
    """A study file; a key given as None is left out."""
    secs = {
        "study": {"name": "bad-input"},
        "data": {"path": "data.csv", "domain": "site", "label": "outcome"},
        "transfer": {"sources": ["a", "b"], "target": "c", "labeled_target": [0, 4], "seeds": 1,
                     "methods": ["source_lr", "target_lr"]},
    }
    for name, upd in (("study", study), ("data", data), ("transfer", transfer)):
        secs[name].update(upd or {})
    out = []
    for name, keys in secs.items():
        if name in drop_sections:
            continue
        out.append(f"[{name}]")
        out += [f"{k} = {json.dumps(v)}" for k, v in keys.items() if v is not None]
    return "\n".join(out) + "\n"


@contextmanager
def case(data, study: str | None = None, *, name: str = "data.csv", out_exists: bool = False):
    """A temporary folder holding the data file and study; yields (study path, out path)."""
    with tempfile.TemporaryDirectory(prefix="ht-bad-") as d:
        d = Path(d)
        if isinstance(data, pd.DataFrame):
            data = data.to_csv(index=False)
        if isinstance(data, str):
            data = data.encode("utf-8")
        (d / name).write_bytes(data)
        (d / "study.toml").write_text(study if study is not None else study_toml(), encoding="utf-8")
        out = d / "out"
        if out_exists:
            out.mkdir()
        yield d / "study.toml", out


def cli(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def check_message(text: str, names, *, extra_secrets=()) -> str:
    """The error paragraph; asserts its shape and that it names ``names``."""
    assert "Traceback" not in text and "Logging error" not in text, text
    assert "Error: " in text, text
    msg = text[text.index("Error: "):].strip()
    assert "\n" not in msg, f"not one paragraph: {msg!r}"
    assert "internal error" not in msg, msg
    for n in names:
        assert n in msg, f"{n!r} not named in: {msg}"
    assert "fix" in msg.lower(), f"no fix in: {msg}"
    for secret in (*MARKER_TEXT, *extra_secrets):
        assert secret not in text, f"patient value {secret!r} printed: {text}"
    return msg


def check_no_output(out: Path, existed: bool) -> None:
    if existed:
        assert out.is_dir() and not {"report.html", "results.json"} & set(os.listdir(out))
    else:
        assert not out.exists(), f"{out} was left behind: {list(out.iterdir())}"


def expect_error(study: Path, out: Path, names, *, existed: bool = False, extra_secrets=(), inspect: bool = True):
    """The same bad input through `run`, `data inspect` (if the data is at fault) and the API."""
    res = cli("run", study, "--out", out, "--jobs", "1")
    assert res.exit_code == 2, res.output
    msg = check_message(res.output, names, extra_secrets=extra_secrets)
    check_no_output(out, existed)
    if inspect:
        res = cli("data", "inspect", study)
        assert res.exit_code == 2, res.output
        check_message(res.output, names, extra_secrets=extra_secrets)
    with pytest.raises(UserInputError) as info:
        run_study(load_study(study), progress=False)
    api = str(info.value)
    for n in names:
        assert n in api
    for secret in (*MARKER_TEXT, *extra_secrets):
        assert secret not in api
    return msg


# --------------------------------------------------------------------------- the valid study
def test_valid_study_runs(tmp_path):
    df = make_frame()
    with case(df) as (study, out):
        res = cli("run", study, "--out", out, "--jobs", "1")
        assert res.exit_code == 0, res.output
        assert (out / "report.html").is_file() and (out / "results.json").is_file()
        payload = json.loads((out / "results.json").read_text())
        assert {r["method"] for r in payload["results"]} == {"source_lr", "target_lr", "selected"}
        assert not [p for p in out.iterdir() if p.name.startswith(".")], "staging left behind"
        res = cli("data", "inspect", study, "--json")
        assert res.exit_code == 0, res.output


def test_debug_shows_the_exception():
    with case(b"") as (study, out):
        res = cli("--debug", "run", study, "--out", out)
        assert isinstance(res.exception, UserInputError)
        check_no_output(out, False)


# --------------------------------------------------------------------------- malformed data files
@FAST
@given(content=st.sampled_from([b"", b"\n", b"  \r\n\t ", b"\xef\xbb\xbf", b"\xef\xbb\xbf\r\n\n"]),
       out_exists=st.booleans())
def test_empty_file(content, out_exists):
    with case(content, out_exists=out_exists) as (study, out):
        msg = expect_error(study, out, ["data.csv", "empty"], existed=out_exists)
        assert str(study.parent) in msg


def test_header_only_file():
    with case("site,age,chol,bp,smoker,outcome\n") as (study, out):
        expect_error(study, out, ["data.csv", "no data rows"])


@FAST
@given(sep=st.sampled_from([";", "\t", "|", ":", " "]), declared=st.sampled_from([",", None]))
def test_wrong_delimiter(sep, declared):
    if declared is None and sep in ";\t|":
        sep = ":"  # the sniffer finds these; an undeclared odd one is the error case
    df = make_frame()
    study = study_toml(data={"delimiter": declared})
    with case(df.to_csv(index=False, sep=sep), study) as (study, out):
        expect_error(study, out, ["data.csv", "delimiter"])


@FAST
@given(col=st.sampled_from(["age", "chol"]), rows_sep=st.sampled_from([";", "\t", "|"]))
def test_decimal_comma_and_mixed_delimiters(col, rows_sep):
    df = make_frame()
    # a decimal comma in a comma-separated file: every row gets extra fields
    text = df.to_csv(index=False).replace(".", ",")
    with case(text) as (study, out):
        expect_error(study, out, ["data.csv", "fields", "header"])
    # header with commas, rows with another delimiter
    header, body = df.to_csv(index=False, sep=rows_sep).split("\n", 1)
    with case(header.replace(rows_sep, ",") + "\n" + body) as (study, out):
        expect_error(study, out, ["data.csv", "delimiter"])


def _not_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


@FAST
@given(bad=st.binary(min_size=1, max_size=8).filter(_not_utf8), row=st.integers(0, 89),
       col=st.sampled_from(["site", *FEATURES]))
def test_non_utf8_bytes(bad, row, col):
    df = make_frame().astype(str)
    df.loc[row, col] = "@@CELL@@"
    raw = df.to_csv(index=False).encode("utf-8").replace(b"@@CELL@@", b"v" + bad)
    with case(raw) as (study, out):
        msg = expect_error(study, out, ["data.csv", "utf-8", "encoding"])
        assert "offset" in msg


WORD = st.text(alphabet="QXZJKWÉØ", min_size=4, max_size=10)


@FAST
@given(col=st.sampled_from(NUMERIC), rows=st.lists(st.integers(0, 89), min_size=1, max_size=3, unique=True),
       word=WORD)
def test_text_in_numeric_column(col, rows, word):
    df = make_frame().astype({col: object})
    for r in rows:
        df.loc[r, col] = word
    first_site = SITES[min(rows) // 30]
    with case(df) as (study, out):
        expect_error(study, out, ["data.csv", f"'{col}'", f"site '{first_site}'", "not numbers", "categorical"],
                     extra_secrets=[word])


@FAST
@given(col=st.sampled_from(NUMERIC), row=st.integers(0, 89),
       value=st.sampled_from(["inf", "-inf", "Infinity", "-Infinity", "INF", "+inf", "1e999", "-1e999"]))
def test_infinite_values(col, row, value):
    df = make_frame().astype({col: object})
    df.loc[row, col] = value
    with case(df) as (study, out):
        expect_error(study, out, ["data.csv", f"'{col}'", f"site '{SITES[row // 30]}'", "infinite"])


@FAST
@given(target=st.sampled_from(SITES), cls=st.sampled_from([0, 1]))
def test_label_one_class_at_target(target, cls):
    df = make_frame()
    df.loc[df["site"] == target, "outcome"] = cls
    sources = [s for s in SITES if s != target]
    with case(df, study_toml(transfer={"sources": sources, "target": target})) as (study, out):
        expect_error(study, out, [f"target site '{target}'", "class"], inspect=False)


def test_label_one_class_at_target_names_label_column():
    df = make_frame()
    df.loc[df["site"] == "c", "outcome"] = 1
    with case(df) as (study, out):
        expect_error(study, out, ["target site 'c'", "'outcome'"], inspect=False)


@FAST
@given(source=st.sampled_from(SITES))
def test_label_one_class_at_the_only_source(source):
    df = make_frame()
    df.loc[df["site"] == source, "outcome"] = 0
    target = next(s for s in SITES if s != source)
    with case(df, study_toml(transfer={"sources": [source], "target": target})) as (study, out):
        expect_error(study, out, ["'outcome'", "single class", "source"], inspect=False)


def test_label_one_class_in_the_whole_file():
    df = make_frame()
    df["outcome"] = 1
    with case(df) as (study, out):
        expect_error(study, out, ["data.csv", "'outcome'", "single class"])


SITE_NAME = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_-ÉØ ", min_size=1, max_size=12).filter(
    lambda s: s.strip() and s not in SITES)


@FAST
@given(site=SITE_NAME, as_target=st.booleans(), out_exists=st.booleans())
def test_site_named_in_study_but_absent_from_data(site, as_target, out_exists):
    transfer = {"sources": ["a", "b"], "target": site} if as_target else {"sources": ["a", site], "target": "c"}
    with case(make_frame(), study_toml(transfer=transfer), out_exists=out_exists) as (study, out):
        msg = expect_error(study, out, [repr([site]), "[transfer]", "'site'"], existed=out_exists, inspect=False)
        assert "['a', 'b', 'c']" in msg  # the sites the data does have


@FAST
@given(col=st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=10).filter(
    lambda c: c not in {"site", "outcome", *FEATURES}), key=st.sampled_from(["domain", "label"]))
def test_domain_or_label_column_missing(col, key):
    with case(make_frame(), study_toml(data={key: col})) as (study, out):
        expect_error(study, out, ["data.csv", f"'{col}'", f"`{key}`"])


@FAST
@given(col=st.sampled_from(["age", "chol"]))
def test_domain_set_to_a_measurement_does_not_list_its_values(col):
    with case(make_frame(), study_toml(data={"domain": col})) as (study, out):
        expect_error(study, out, ["data.csv", f"'{col}'", "`domain`"])


@FAST
@given(dup=st.sampled_from(["site", *FEATURES, "outcome"]), victim=st.sampled_from(FEATURES))
def test_duplicate_columns(dup, victim):
    df = make_frame()
    if dup == victim:
        victim = "bp" if dup != "bp" else "age"
    cols = [dup if c == victim else c for c in df.columns]
    text = ",".join(cols) + "\n" + df.to_csv(index=False, header=False)
    with case(text) as (study, out):
        expect_error(study, out, ["data.csv", "duplicate", f"'{dup}'"])


@FAST
@given(row=st.integers(0, 29), site=st.sampled_from(SITES))
def test_one_row_target_site(row, site):
    df = make_frame()
    keep = (df["site"] != site) | (df.index == SITES.index(site) * 30 + row)
    sources = [s for s in SITES if s != site]
    with case(df[keep], study_toml(transfer={"sources": sources, "target": site})) as (study, out):
        expect_error(study, out, [f"target site '{site}'", "1 row"], inspect=False)


@FAST
@given(row=st.integers(0, 29))
def test_one_row_only_source_site(row):
    df = make_frame()
    keep = (df["site"] != "a") | (df.index == row)
    with case(df[keep], study_toml(transfer={"sources": ["a"], "target": "c"})) as (study, out):
        msg = expect_error(study, out, ["source"], inspect=False)
        assert "site 'a'" in msg or "'outcome'" in msg


def test_one_row_only_source_site_is_named():
    df = make_frame()
    keep = (df["site"] != "a") | (df.index == 0)
    with case(df[keep], study_toml(transfer={"sources": ["a"], "target": "c"})) as (study, out):
        expect_error(study, out, ["site 'a'", "1 row"], inspect=False)


# --------------------------------------------------------------------------- a feature absent at one site
@pytest.mark.parametrize("col,site", [("chol", "c"), ("smoker", "a")])
def test_feature_absent_at_one_site_is_a_warning(col, site):
    df = make_frame()
    df.loc[df["site"] == site, col] = np.nan
    with case(df) as (study, out):
        res = cli("run", study, "--out", out, "--jobs", "1")
        assert res.exit_code == 0, res.output
        payload = json.loads((out / "results.json").read_text())
        rows = {(r["site"], r["column"]): r for r in payload["harmonisation"]["rows"]}
        assert rows[(site, col)]["missing_share"] == 1.0
        assert all(rows[(s, col)]["missing_share"] < 1.0 for s in SITES if s != site)
        html = (out / "report.html").read_text()
        assert f"never measured: {col}" in html
        for secret in MARKER_TEXT:
            assert secret not in res.output
        res = cli("data", "inspect", study)
        assert res.exit_code == 0 and f"never measured: {col}" in res.output


@FAST
@given(col=st.sampled_from(FEATURES), out_exists=st.booleans())
def test_feature_empty_at_every_site_is_an_error(col, out_exists):
    df = make_frame()
    df[col] = np.nan
    with case(df, out_exists=out_exists) as (study, out):
        expect_error(study, out, [f"'{col}'", "every site"], existed=out_exists, inspect=False)


def test_warnings_survive_repeated_in_process_runs(monkeypatch):
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # as outside pytest's log capture
    df = make_frame()
    df.loc[df["site"] == "c", "chol"] = np.nan
    for _ in range(2):
        with case(df) as (study, out):
            res = cli("run", study, "--out", out, "--jobs", "1")
            assert res.exit_code == 0, res.output
            assert "Logging error" not in res.output and "Traceback" not in res.output
            assert "never measures chol" in res.output


# --------------------------------------------------------------------------- other file kinds
def test_broken_parquet():
    pytest.importorskip("pyarrow")
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "data.parquet"
        make_frame().to_parquet(p)
        p.write_bytes(p.read_bytes()[:200])
        with case(b"unused", study_toml(data={"path": "data.parquet"}), name="unused.csv") as (study, out):
            (study.parent / "data.parquet").write_bytes(p.read_bytes())
            expect_error(study, out, ["data.parquet", "Parquet"])


def test_missing_data_file():
    with case(make_frame(), study_toml(data={"path": "nope.csv"})) as (study, out):
        expect_error(study, out, ["nope.csv", "path"])


# --------------------------------------------------------------------------- the study file
def _study_error(text: str | bytes, names, out_exists: bool = False) -> str:
    with case(make_frame(), "", out_exists=out_exists) as (study, out):
        study.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
        return expect_error(study, out, ["study.toml", *names], existed=out_exists)


ALLOWED = {"study": {"name", "description"},
           "data": {"path", "dataset", "data_dir", "options", "domain", "label", "positive", "features",
                    "categorical", "group", "reference_score", "schema", "delimiter", "encoding", "subgroups"},
           "transfer": {"sources", "target", "labeled_target", "seeds", "test_fraction", "methods"}}


@FAST
@given(section=st.sampled_from(sorted(ALLOWED)),
       key=st.from_regex(r"[a-z][a-z0-9_]{1,12}", fullmatch=True), out_exists=st.booleans())
def test_study_unknown_key(section, key, out_exists):
    if key in ALLOWED[section]:
        key = key + "_x"
    text = study_toml(**{section: {key: 1}})
    msg = _study_error(text, [f"[{section}.{key}]", "unknown key"], out_exists)
    assert "accepts" in msg


@FAST
@given(value=st.one_of(st.text(alphabet="xyz ", min_size=1, max_size=5), st.just(2.5), st.just([1])))
def test_study_wrong_type(value):
    _study_error(study_toml(transfer={"seeds": value}), ["[transfer.seeds]", "seeds = 20"])


@FAST
@given(section=st.sampled_from(["study", "data", "transfer"]))
def test_study_missing_section(section):
    _study_error(study_toml(drop_sections=(section,)), [f"[{section}]", "missing", f"[{section}] table"])


@FAST
@given(target=st.sampled_from(["a", "b"]))
def test_study_target_is_also_a_source(target):
    _study_error(study_toml(transfer={"target": target}), ["[transfer]", repr([target]), "`sources`"])


@FAST
@given(broken=st.sampled_from(['seeds = = 1', 'name = "x', '[transfer', 'sources = ["a", "b"', 'seeds 1',
                                'x = 1\nx = 2']))
def test_study_invalid_toml(broken):
    text = study_toml() + broken + "\n"
    _study_error(text, ["not valid TOML", "line"])


@FAST
@given(text=st.sampled_from(["", "\n\n", "  \t\n", "\ufeff", "\ufeff\n"]))
def test_study_empty_file(text):
    _study_error(text, ["empty", "[transfer]"])


def test_study_with_byte_order_mark_is_read(tmp_path):
    (tmp_path / "study.toml").write_bytes(b"\xef\xbb\xbf" + study_toml().encode())
    make_frame().to_csv(tmp_path / "data.csv", index=False)
    assert load_study(tmp_path / "study.toml").study.name == "bad-input"


def test_study_not_utf8():
    _study_error(study_toml().encode("utf-8") + b"# \xff\xfe\n", ["UTF-8"])


def test_inspect_needs_a_study_or_dataset():
    res = cli("data", "inspect")
    assert res.exit_code == 2
    check_message(res.output, ["--dataset"])
