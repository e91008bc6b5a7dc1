"""Large-Parquet benchmark: the streaming harmonisation report and shift summary on ~10 GiB.

Generates (once) a synthetic multi-site ICU vitals table as a directory of Parquet files of
about 256 MB each, written batch by batch with pyarrow so that generation itself uses bounded
memory (``$HT_LARGE_DATA/parquet/``), plus the schema that cleans it
(``$HT_LARGE_DATA/schema.toml``). Four sites
(``site_a`` .. ``site_d``), a domain column ``site``, a binary label ``death``, 40 numeric
features (float32) and one coded categorical, with the quirks a schema has to clean:

- ``site_b`` records temperature in °F (unit conversion to °C);
- sentinel missing values: ``-1`` for vitals at ``site_a``, ``999``/``9999`` for labs at
  ``site_d``, ``-1`` for the GCS everywhere;
- ``site_c`` exports heart rate as ``heart_rate`` (renamed to ``hr``) and writes the admission
  type as codes ``"1"``/``"2"``/``"3"`` (code map; ``"9"`` is unmapped);
- about 10% of the values missing, ``bnp`` never measured at ``site_d``;
- about 0.3% of the values out of their physiological range (typos, unit slips);
- covariate shift (``site_d`` older and sicker) and label shift (mortality 9%-25% by site).

Then each step runs in its own subprocess, so peak memory is measured per step: the child
reports ``ru_maxrss`` and the parent polls the RSS of the child's process tree with psutil.
Steps: (a) ``streaming_harmonisation_report`` over the dataset, (b) ``streaming_shift_summary``
of ``site_d`` against the other three sites; both on the whole dataset and on a one-file slice,
to show that memory does not grow with the size of the data.

Usage::

    python benchmarks/large_parquet.py                  # ~10 GiB under $HT_LARGE_DATA
    python benchmarks/large_parquet.py --gib 0.5        # a smaller dataset
    python benchmarks/large_parquet.py --quick          # smoke run (tiny, results/quick/)
    python benchmarks/large_parquet.py --generate-only  # only write the data

Writes ``benchmarks/results/large_parquet.json`` and ``benchmarks/results/large_parquet.md``
(``--out-dir`` to change; ``--quick`` writes to ``benchmarks/results/quick/``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _limits import run_limited  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DATA_DIR = Path(os.environ.get("HT_LARGE_DATA", "/tmp/healthtransfer_large"))
GEN_VERSION = 1  # bump when the generator changes: regenerates data with an older marker

SITES = ["site_a", "site_b", "site_c", "site_d"]
SITE_P = np.array([0.35, 0.25, 0.20, 0.20])
SOURCES = ["site_a", "site_b", "site_c"]
TARGET = "site_d"
LABEL = "death"
DOMAIN = "site"

# name, unit, mean, sd, loading on the latent severity, decimals (None: full float32), range
FEATURES = [
    ("hr", "beats/min", 88, 18, 0.5, 0, (20, 250)),
    ("sbp", "mmHg", 120, 22, -0.4, 0, (40, 260)),
    ("dbp", "mmHg", 65, 13, -0.3, 0, (20, 180)),
    ("map", "mmHg", 82, 14, -0.4, 0, (30, 200)),
    ("rr", "breaths/min", 19, 5, 0.4, 0, (4, 70)),
    ("spo2", "%", 96, 2.5, -0.3, 0, (50, 100)),
    ("temp", "°C", 37.0, 0.7, 0.2, 1, (30, 43)),
    ("gcs", "points", 13, 2.5, -0.5, 0, (3, 15)),
    ("fio2", "fraction", 0.35, 0.12, 0.4, 2, (0.21, 1.0)),
    ("urine_output", "mL/day", 1600, 700, -0.4, 0, (0, 10000)),
    ("glucose", "mg/dL", 140, 45, 0.2, None, (20, 1500)),
    ("lactate", "mmol/L", 2.0, 1.2, 0.6, None, (0.1, 30)),
    ("creatinine", "mg/dL", 1.3, 0.8, 0.4, None, (0.1, 20)),
    ("bun", "mg/dL", 25, 14, 0.4, None, (1, 250)),
    ("sodium", "mmol/L", 139, 4.5, 0.1, None, (100, 180)),
    ("potassium", "mmol/L", 4.1, 0.6, 0.1, None, (1.5, 9)),
    ("chloride", "mmol/L", 104, 5, 0.0, None, (60, 150)),
    ("bicarbonate", "mmol/L", 24, 4.5, -0.4, None, (5, 50)),
    ("hemoglobin", "g/dL", 11, 2.2, -0.2, None, (2, 25)),
    ("hematocrit", "%", 33, 6, -0.2, None, (8, 70)),
    ("wbc", "10^9/L", 11, 5, 0.3, None, (0.1, 200)),
    ("platelets", "10^9/L", 210, 90, -0.3, None, (1, 2000)),
    ("bilirubin", "mg/dL", 1.1, 1.0, 0.3, None, (0.05, 50)),
    ("albumin", "g/dL", 3.1, 0.6, -0.4, None, (0.5, 6.5)),
    ("ph", "", 7.38, 0.07, -0.4, None, (6.5, 8.0)),
    ("pao2", "mmHg", 110, 45, -0.2, None, (20, 700)),
    ("paco2", "mmHg", 40, 8, 0.1, None, (8, 150)),
    ("inr", "", 1.3, 0.4, 0.3, None, (0.5, 15)),
    ("alt", "U/L", 45, 40, 0.2, None, (1, 10000)),
    ("ast", "U/L", 55, 50, 0.3, None, (1, 10000)),
    ("alp", "U/L", 100, 50, 0.1, None, (5, 3000)),
    ("troponin", "ng/mL", 0.3, 0.5, 0.3, None, (0, 100)),
    ("bnp", "pg/mL", 400, 300, 0.3, None, (0, 35000)),
    ("crp", "mg/L", 60, 50, 0.4, None, (0, 600)),
    ("magnesium", "mg/dL", 2.0, 0.3, 0.0, None, (0.5, 6)),
    ("calcium", "mg/dL", 8.5, 0.7, -0.2, None, (3, 16)),
    ("phosphate", "mg/dL", 3.6, 1.1, 0.2, None, (0.5, 15)),
    ("age", "years", 63, 16, 0.3, 0, (18, 110)),
    ("weight", "kg", 82, 20, 0.0, 1, (25, 350)),
    ("height", "cm", 170, 10, 0.0, 0, (120, 230)),
]
NAMES = [f[0] for f in FEATURES]
VITAL_SENTINEL = ["hr", "sbp", "dbp", "rr", "spo2"]  # site_a writes -1 for 'not measured'
LAB_SENTINEL = ["glucose", "lactate", "creatinine", "wbc", "platelets"]  # site_d: 999 / 9999
ADMISSION = ["medical", "surgical", "emergency"]

# site quirks: mean shift (in sd units) of the latent severity, per-feature mean shifts, label intercept
SITE_SEVERITY = {"site_a": 0.0, "site_b": 0.1, "site_c": -0.1, "site_d": 0.6}
SITE_SHIFT = {"site_d": {"age": 0.5, "lactate": 0.4, "hr": 0.3, "albumin": -0.4, "creatinine": 0.3},
              "site_b": {"weight": 0.2}, "site_c": {"sodium": -0.2}}
SITE_INTERCEPT = {"site_a": -2.6, "site_b": -2.3, "site_c": -2.5, "site_d": -1.7}


def schema_dict() -> dict:
    """The schema that cleans the generated data (as a plain dict, the TOML's content)."""
    feats = [{"name": n, "kind": "numeric", **({"unit": u} if u else {}), "range": [float(r[0]), float(r[1])]}
             for n, u, _m, _s, _l, _d, r in FEATURES]
    feats.append({"name": "admission_type", "kind": "categorical", "categories": list(ADMISSION)})
    return {
        "name": "synthetic_icu_large",
        "label": LABEL,
        "positive": 1,
        "domain": DOMAIN,
        "description": "Synthetic multi-site ICU vitals and labs (benchmarks/large_parquet.py).",
        "features": feats,
        "sites": {
            "*": {"missing_values": {"gcs": [-1]}},
            "site_a": {"missing_values": {c: [-1] for c in VITAL_SENTINEL}},
            "site_b": {"units": {"temp": {"from_unit": "°F", "factor": 5 / 9, "offset": -160 / 9}}},
            "site_c": {"rename": {"heart_rate": "hr"},
                       "code_maps": {"admission_type": {"1": "medical", "2": "surgical", "3": "emergency"}}},
            "site_d": {"missing_values": {c: [999, 9999] for c in LAB_SENTINEL}},
        },
    }


def _toml_value(v) -> str:
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(type(v))


def schema_toml(d: dict) -> str:
    """A small TOML writer for the schema dict (no third-party writer needed)."""
    lines = ["# Written by benchmarks/large_parquet.py: the schema of the synthetic ICU table."]
    for k, v in d.items():
        if k not in ("features", "sites"):
            lines.append(f"{k} = {_toml_value(v)}")
    for f in d["features"]:
        lines += ["", "[[features]]"] + [f"{k} = {_toml_value(v)}" for k, v in f.items()]
    for site, spec in d["sites"].items():
        for key, val in spec.items():
            lines += ["", f"[sites.{json.dumps(site)}.{key}]"]
            lines += [f"{json.dumps(c)} = {_toml_value(x)}" for c, x in val.items()]
    return "\n".join(lines) + "\n"


# -- data --------------------------------------------------------------------------------------
def make_chunk(rng: np.random.Generator, n: int):
    """One pyarrow Table of ``n`` raw rows (all sites mixed, as a stacked export)."""
    import pyarrow as pa

    site = rng.choice(len(SITES), size=n, p=SITE_P).astype(np.int8)
    sev_shift = np.array([SITE_SEVERITY[s] for s in SITES], np.float32)
    sev = rng.standard_normal(n, dtype=np.float32) + sev_shift[site]
    cols: dict[str, pa.Array] = {}
    p = len(FEATURES)
    Z = rng.standard_normal((p, n), dtype=np.float32)  # one contiguous row per feature
    miss = rng.random((p, n), dtype=np.float32) < 0.10
    oor = rng.random((p, n), dtype=np.float32) < 0.003
    sent = rng.random((p, n), dtype=np.float32) < 0.03
    is_site = [site == i for i in range(len(SITES))]
    for j, (name, _u, mu, sd, load, dec, rng_) in enumerate(FEATURES):
        x = Z[j]
        x *= np.float32(np.sqrt(1 - load**2))
        x += np.float32(load) * sev
        for si, s in enumerate(SITES):
            shift = SITE_SHIFT.get(s, {}).get(name)
            if shift:
                x[is_site[si]] += np.float32(shift)
        x *= np.float32(sd)
        x += np.float32(mu)
        if dec is not None:
            np.round(x, dec, out=x)
        np.clip(x, np.float32(rng_[0]), np.float32(rng_[1]), out=x)
        if name == "temp":  # site_b writes Fahrenheit
            b = is_site[1]
            x[b] = np.round(x[b] * np.float32(1.8) + np.float32(32), 1)
        # out-of-range: typos (x10) and negative slips, set missing by the schema's range
        o = oor[j]
        x[o] = np.where(rng.random(int(o.sum())) < 0.5, x[o] * 10 + rng_[1], -abs(x[o]) - 1).astype(np.float32)
        m = miss[j]
        if name == "bnp":
            m = m | is_site[3]  # site_d never measures BNP
        x[m] = np.nan
        if name in VITAL_SENTINEL:
            x[sent[j] & is_site[0]] = -1
        if name == "gcs":
            x[sent[j]] = -1
        if name in LAB_SENTINEL:
            k = sent[j] & is_site[3]
            x[k] = np.where(rng.random(int(k.sum())) < 0.7, 999, 9999)
        if name == "hr":  # site_c exports heart rate under another name
            hc = np.where(is_site[2], x, np.nan).astype(np.float32)
            x[is_site[2]] = np.nan
            cols["heart_rate"] = pa.array(hc)
        cols[name] = pa.array(x)
    # admission type: text at a, b, d; codes at c; a few unknown values
    adm = rng.choice(3, size=n, p=[0.55, 0.25, 0.20])
    text = np.array(ADMISSION + ["unknown"], dtype=object)
    codes = np.array(["1", "2", "3", "9"], dtype=object)
    unk = rng.random(n) < 0.002
    adm = np.where(unk, 3, adm)
    vals = np.where(is_site[2], codes[adm], text[adm])
    vals[rng.random(n) < 0.05] = None
    eta = np.array([SITE_INTERCEPT[s] for s in SITES], np.float32)[site] + 1.1 * sev
    y = (rng.random(n, dtype=np.float32) < 1 / (1 + np.exp(-eta))).astype(np.int8)
    site_names = pa.DictionaryArray.from_arrays(pa.array(site), pa.array(SITES)).cast(pa.string())
    out = {DOMAIN: site_names, LABEL: pa.array(y), "admission_type": pa.array(vals, pa.string()), **cols}
    return pa.table(out)


def _file_bytes() -> int:
    return 256 * 2**20


def generate(data_dir: Path, gib: float, seed: int = 0, chunk_rows: int = 262_144, progress: bool = True) -> dict:
    """Write ``data_dir/parquet/part-XXXXX.parquet`` (about ``gib`` GiB in all) and
    ``data_dir/schema.toml``.

    Skipped when ``data_dir/done`` records the same size and generator version."""
    import pyarrow.parquet as pq

    parts = data_dir / "parquet"  # only Parquet files in the dataset folder
    parts.mkdir(parents=True, exist_ok=True)
    marker = data_dir / "done"
    if marker.exists():
        info = json.loads(marker.read_text())
        if info.get("gib") == gib and info.get("version") == GEN_VERSION:
            return info
    for f in parts.glob("part-*"):
        f.unlink()
    marker.unlink(missing_ok=True)
    (data_dir / "schema.toml").write_text(schema_toml(schema_dict()), encoding="utf-8")
    total = int(gib * 2**30)
    file_bytes = min(_file_bytes(), max(total // 4, 1))  # small runs: still several files
    # calibrate bytes per row on a small chunk (random float32 barely compresses)
    probe = data_dir / "probe.parquet"
    pq.write_table(make_chunk(np.random.default_rng([seed, 999_999]), 65_536), probe, compression="snappy",
                   use_dictionary=[DOMAIN, "admission_type"])
    bpr = probe.stat().st_size / 65_536
    probe.unlink()
    n_files = max(1, round(total / file_bytes))
    rows_per_file = max(1000, int(total / n_files / bpr))
    t0 = time.perf_counter()
    bar = None
    if progress:
        from rich.progress import Progress

        bar = Progress(transient=True)
        bar.start()
        task = bar.add_task(f"writing {n_files} files", total=n_files * rows_per_file)
    rows = 0
    try:
        for i in range(n_files):
            rng = np.random.default_rng([seed, i])
            path = parts / f"part-{i:05d}.parquet"
            tmp = path.with_suffix(".tmp")
            writer = None
            left = rows_per_file
            while left > 0:
                k = min(chunk_rows, left)
                tab = make_chunk(rng, k)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, tab.schema, compression="snappy",
                                             use_dictionary=[DOMAIN, "admission_type"])
                writer.write_table(tab, row_group_size=chunk_rows)
                left -= k
                rows += k
                if bar is not None:
                    bar.advance(task, k)
            writer.close()
            tmp.rename(path)
    finally:
        if bar is not None:
            bar.stop()
    size = sum(f.stat().st_size for f in parts.glob("part-*.parquet"))
    info = {"gib": gib, "version": GEN_VERSION, "files": n_files, "rows": rows, "rows_per_file": rows_per_file,
            "bytes": size, "disk_gib": size / 2**30, "generate_seconds": time.perf_counter() - t0,
            "bytes_per_row": size / rows}
    marker.write_text(json.dumps(info, indent=1))
    return info


# -- the steps (run in a child process) ---------------------------------------------------------
def _peak_gib() -> float:
    import resource

    # ru_maxrss is in KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run_step(step: str, path: str, schema_path: str, batch_rows: int) -> dict:
    from healthtransfer.data.schema import load_schema
    from healthtransfer.data.streaming import streaming_harmonisation_report, streaming_shift_summary

    schema = load_schema(schema_path)
    base = _peak_gib()
    p = Path(path)
    files = sorted(p.glob("part-*.parquet")) if p.is_dir() else [p]
    rec = {"step": step, "path": path, "files": len(files),
           "disk_gib": sum(f.stat().st_size for f in files) / 2**30, "baseline_gib": base}
    t0 = time.perf_counter()
    if step == "report":
        rep = streaming_harmonisation_report(path, schema, batch_rows=batch_rows)
        rec["seconds"] = time.perf_counter() - t0
        rows = rep.rows
        per_site = {}
        for site, g in rows.groupby("site", sort=False):
            per_site[str(site)] = {"n_rows": int(g["n_rows"].iloc[0]),
                                   "n_sentinel": int(g["n_sentinel"].sum()),
                                   "n_converted": int(g["n_converted"].sum()),
                                   "n_out_of_range": int(g["n_out_of_range"].sum()),
                                   "n_unmapped": int(g["n_unmapped"].sum()),
                                   "missing_share": float(g["missing_share"].mean()),
                                   "never_measured": rep.absent().get(str(site), [])}
        rec["rows"] = int(sum(s["n_rows"] for s in per_site.values()))
        rec["per_site"] = per_site
        rec["summary_lines"] = rep.summary_lines()
    elif step == "shift":
        out = streaming_shift_summary(path, schema, SOURCES, TARGET, batch_rows=batch_rows)
        rec["seconds"] = time.perf_counter() - t0
        f = out["features"]
        rec["rows"] = int(out["n_source"] + out["n_target"])
        rec["n_source"], rec["n_target"] = int(out["n_source"]), int(out["n_target"])
        rec["domain_classifier"] = {k: (float(v) if isinstance(v, (float, np.floating)) else v)
                                    for k, v in out["domain_classifier"].items()}
        rec["top_smd"] = [{"feature": r.feature, "smd": float(r.smd), "missing_diff": float(r.missing_diff)}
                          for r in f.head(5).itertuples()]
        mmd = out["mmd"]
        rec["mmd"] = {k: float(v) for k, v in mmd.items() if isinstance(v, (int, float, np.floating, np.integer))}
    else:
        raise ValueError(step)
    rec["peak_gib"] = _peak_gib()
    rec["status"] = "ok"
    return rec


def launch(step: str, path: Path, schema: Path, batch_rows: int, timeout: float, max_gib: float, label: str) -> dict:
    cmd = [sys.executable, __file__, "--step", step, str(path), str(schema), "--batch-rows", str(batch_rows)]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "2")
    r = run_limited(cmd, timeout=timeout, max_gib=max_gib, env=env)
    out, err, wall, seen, status = r.out, r.err, r.wall_seconds, r.peak_gib, r.status
    if status is None:
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        if r.returncode == 0 and lines:
            rec = json.loads(lines[-1])
            rec.update(wall_seconds=wall, polled_peak_gib=seen, label=label)
            return rec
        tail = (err.strip().splitlines() or ["?"])[-1][:300]
        status = f"failed: {tail}"
    return {"step": step, "label": label, "path": str(path), "status": status, "wall_seconds": wall,
            "polled_peak_gib": seen, "peak_gib": None}


# -- report --------------------------------------------------------------------------------------
def _f(x, fmt):
    return "-" if x is None else format(x, fmt)


def write_md(out: dict, path: Path) -> None:
    d = out["data"]
    lines = ["# Large-Parquet benchmark", ""]
    if out.get("quick"):
        lines += ["QUICK smoke run: not a result.", ""]
    lines += [f"Synthetic 4-site ICU table, {len(NAMES)} numeric features + 1 coded categorical, "
              f"{d['rows']:,} rows in {d['files']} Parquet files, {d['disk_gib']:.2f} GiB on disk "
              f"({d['bytes_per_row']:.0f} B/row). {out['environment']['cores']} cores, batch_rows="
              f"{out['config']['batch_rows']:,}. Each step in its own process: `peak GiB` is the child's "
              "`ru_maxrss`, `polled GiB` the largest RSS of the child's process tree the parent saw, "
              "`baseline GiB` the child's peak after its imports (before reading data).", "",
              "| step | data | files | rows | GiB on disk | wall s | step s | peak GiB | polled GiB | baseline GiB | rows/s |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in out["steps"]:
        if r["status"] != "ok":
            lines.append(f"| {r['step']} | {r['label']} | - | - | - | {r['wall_seconds']:.1f} | {r['status']} | - | "
                         f"{r['polled_peak_gib']:.2f} | - | - |")
            continue
        lines.append(f"| {r['step']} | {r['label']} | {r['files']} | {r['rows']:,} | {r['disk_gib']:.2f} | "
                     f"{r['wall_seconds']:.1f} | {r['seconds']:.1f} | {r['peak_gib']:.2f} | "
                     f"{r['polled_peak_gib']:.2f} | {r['baseline_gib']:.2f} | {r['rows'] / r['seconds']:,.0f} |")
    lines.append("")
    full = {r["step"]: r for r in out["steps"] if r["label"] == "full" and r["status"] == "ok"}
    if "report" in full:
        lines += ["## Harmonisation report (full dataset)", "",
                  "| site | rows | sentinels | converted | out of range | unmapped | mean missing | never measured |",
                  "|---|---:|---:|---:|---:|---:|---:|---|"]
        for s, v in full["report"]["per_site"].items():
            lines.append(f"| {s} | {v['n_rows']:,} | {v['n_sentinel']:,} | {v['n_converted']:,} | "
                         f"{v['n_out_of_range']:,} | {v['n_unmapped']:,} | {v['missing_share']:.1%} | "
                         f"{', '.join(v['never_measured']) or '-'} |")
        lines.append("")
    if "shift" in full:
        r = full["shift"]
        dc, mmd = r["domain_classifier"], r["mmd"]
        lines += [f"## Shift summary (full dataset): {TARGET} against {', '.join(SOURCES)}", "",
                  f"- rows: {r['n_source']:,} source, {r['n_target']:,} target",
                  f"- domain classifier (SGD, held-out): AUROC {_f(dc.get('auroc'), '.3f')} "
                  f"({dc.get('n_train', 0):,} train rows, {dc.get('n_holdout', 0):,} held out)",
                  f"- MMD on reservoir samples: statistic {_f(mmd.get('mmd2', mmd.get('statistic')), '.4f')}, "
                  f"p = {_f(mmd.get('p_value'), '.3f')}",
                  "- top features by |SMD|: " + ", ".join(f"{t['feature']} ({t['smd']:+.2f})" for t in r["top_smd"]),
                  ""]
    path.write_text("\n".join(lines) + "\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=float, default=10.0, help="size of the dataset on disk (default 10)")
    ap.add_argument("--data-dir", default=None, help=f"where the data goes (default $HT_LARGE_DATA or {DATA_DIR})")
    ap.add_argument("--quick", action="store_true", help="smoke run: 0.02 GiB, results to results/quick/")
    ap.add_argument("--batch-rows", type=int, default=None, help="rows per streamed batch (default 262144, one row group)")
    ap.add_argument("--steps", nargs="+", default=["report", "shift"], choices=["report", "shift"])
    ap.add_argument("--no-small", action="store_true", help="skip the one-file runs")
    ap.add_argument("--generate-only", action="store_true")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per step before it is stopped")
    ap.add_argument("--max-gib", type=float, default=16.0, help="RSS per step before it is stopped")
    ap.add_argument("--out-dir", default=None)
    ap.add_argument("--step", nargs=3, metavar=("STEP", "PATH", "SCHEMA"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    batch_rows = args.batch_rows or 262_144  # = the generated row groups
    if args.step:
        print(json.dumps(run_step(args.step[0], args.step[1], args.step[2], batch_rows)), flush=True)
        return None
    gib = 0.02 if args.quick and args.gib == ap.get_default("gib") else args.gib
    if args.data_dir:
        data_dir = Path(args.data_dir)
    else:
        data_dir = DATA_DIR.with_name(DATA_DIR.name + "_quick") if args.quick else DATA_DIR
    out_dir = Path(args.out_dir) if args.out_dir else (RESULTS / "quick" if args.quick else RESULTS)
    out_dir.mkdir(parents=True, exist_ok=True)
    info = generate(data_dir, gib, progress=not args.quick)
    print(f"data: {info['rows']:,} rows, {info['files']} files, {info['disk_gib']:.2f} GiB in {data_dir}", flush=True)
    if args.generate_only:
        return None
    schema = data_dir / "schema.toml"
    first = sorted((data_dir / "parquet").glob("part-*.parquet"))[0]
    plan = [("full", data_dir / "parquet")] + ([] if args.no_small or info["files"] == 1 else [("one file", first)])
    steps = []
    out = {"benchmark": "large_parquet", "quick": bool(args.quick), "data": {**info, "dir": str(data_dir)},
           "config": {"batch_rows": batch_rows, "sources": SOURCES, "target": TARGET,
                      "timeout": args.timeout, "max_gib": args.max_gib},
           "environment": {"cores": os.cpu_count(), "python": platform.python_version(),
                           "machine": platform.machine()},
           "steps": steps}
    t0 = time.perf_counter()
    for label, path in plan:
        for step in args.steps:
            rec = launch(step, path, schema, batch_rows, args.timeout, args.max_gib, label)
            steps.append(rec)
            print(f"{label} {step}: {rec['status']}, {rec['wall_seconds']:.1f} s, "
                  f"peak {_f(rec.get('peak_gib'), '.2f')} GiB", flush=True)
            out["seconds"] = time.perf_counter() - t0
            (out_dir / "large_parquet.json").write_text(json.dumps(out, indent=1, default=str))
            write_md(out, out_dir / "large_parquet.md")
    return out


if __name__ == "__main__":
    main()
