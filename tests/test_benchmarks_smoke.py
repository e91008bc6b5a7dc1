"""Smoke test of the benchmark scripts: a tiny --quick run of each, and the JSON shape.

Tiny on purpose (1 seed, 1 target, 3 of our methods, 1 skada pipeline, 2 budgets, in-process
with n_jobs=1), so the three runs together take well under a minute.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
DATA = Path(os.environ["HEALTHTRANSFER_DATA"])  # set in conftest.py

CASES = [
    ("heart_shift", ["source_lr", "pooled_lr", "coral_lr"], ["0", "10"], "auroc", False),
    ("eicu_region", ["source_lr", "pooled_lr", "reference_recalibration"], ["0", "50"], "auroc", True),
    ("wearable_device", ["source_lr", "target_lr", "domain_std_lr"], ["0", "30"], "accuracy", True),
]


def _load(name):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("name,methods,budgets,metric,needs_data", CASES, ids=[c[0] for c in CASES])
def test_quick_run_json_shape(tmp_path, name, methods, budgets, metric, needs_data):
    if needs_data and not DATA.is_dir():
        pytest.skip("shared data folder not available")
    mod = _load(name)
    mod.main(["--quick", "--seeds", "1", "--methods", *methods, "--skada", "SourceOnly",
              "--budgets", *budgets, "--n-jobs", "1", "--out-dir", str(tmp_path)])
    out = json.loads((tmp_path / f"{name}.json").read_text())
    assert out["benchmark"] == name
    for key in ("title", "protocol", "config", "environment", "seconds", "records", "skipped", "selections",
                "summary", "notes"):
        assert key in out, key
    assert out["config"]["headline"] == metric
    assert len(out["config"]["pairs"]) == 1 and out["config"]["seeds"] == [0]
    recs = out["records"]
    assert recs, "no records"
    for r in recs:
        for key in ("method", "side", "family", "pair", "target", "n_labeled", "seed", "n_test", "fit_seconds", metric):
            assert key in r, (key, r)
    sides = {r["side"] for r in recs}
    assert {"ours", "skada"} <= sides
    ours = {r["method"] for r in recs if r["side"] == "ours"}
    assert ours <= set(methods) and "source_lr" in ours
    assert {r["n_labeled"] for r in recs} <= {int(b) for b in budgets}
    assert all(r["method"] == "skada:SourceOnly" for r in recs if r["side"] == "skada")
    head = out["summary"]["headline"]
    assert head and all({"target", "n_labeled", "best_baseline", f"best_baseline_{metric}"} <= set(h) for h in head)
    md = (tmp_path / f"{name}.md").read_text()
    assert "## Headline" in md and "## Pair-averaged" in md
    if name == "eicu_region":
        assert any(r["method"] == "reference:apache_iv" for r in recs)
        assert "## Against APACHE IV" in md
    if out["config"]["selection"]:
        assert any(r["method"] == "selected" for r in recs)


def test_large_parquet_quick(tmp_path):
    """The large-Parquet benchmark end to end on a tiny dataset: generation, both streaming
    steps in their own processes, peak memory per step, JSON and Markdown."""
    pytest.importorskip("psutil")
    mod = _load("large_parquet")
    mod.main(["--quick", "--data-dir", str(tmp_path / "data"), "--out-dir", str(tmp_path / "out")])
    out = json.loads((tmp_path / "out" / "large_parquet.json").read_text())
    assert out["benchmark"] == "large_parquet" and out["quick"] is True
    assert out["data"]["rows"] > 0 and out["data"]["files"] > 1
    steps = {(s["label"], s["step"]): s for s in out["steps"]}
    assert set(steps) == {("full", "report"), ("full", "shift"), ("one file", "report"), ("one file", "shift")}
    for s in steps.values():
        assert s["status"] == "ok", s
        assert 0 < s["peak_gib"] < 4 and s["polled_peak_gib"] >= 0 and s["wall_seconds"] > 0
    assert steps[("full", "report")]["rows"] == out["data"]["rows"]
    assert steps[("full", "shift")]["rows"] == out["data"]["rows"]
    per_site = steps[("full", "report")]["per_site"]
    assert set(per_site) == {"site_a", "site_b", "site_c", "site_d"}
    assert per_site["site_b"]["n_converted"] > 0 and per_site["site_d"]["never_measured"] == ["bnp"]
    assert per_site["site_a"]["n_sentinel"] > per_site["site_b"]["n_sentinel"]
    assert 0.5 < steps[("full", "shift")]["domain_classifier"]["auroc"] <= 1
    md = (tmp_path / "out" / "large_parquet.md").read_text()
    assert "| report | full |" in md and "| shift | one file |" in md


def test_eicu_runs_the_protocols_twelve_ordered_pairs():
    mod = _load("eicu_region")
    cfg = mod.config()
    pairs = list(cfg.pairs.values())
    assert len(pairs) == 12 and len({(tuple(s), t) for s, t in pairs}) == 12
    assert all(t not in s for s, t in pairs)
    assert cfg.budgets("Midwest→Northeast") == [0, 50] and cfg.budgets("Northeast→Midwest") == [0, 50, 200]
    # --sources / --targets pick pairs; an empty pick is an error that says what to do
    args = mod.base_parser("").parse_args(["--sources", "Midwest"])
    cfg2, _ = mod.apply_cli(mod.config(), args, quick_methods=["source_lr"], quick_skada=["SourceOnly"])
    assert sorted(cfg2.pairs) == ["Midwest→Northeast", "Midwest→South", "Midwest→West"]
    args = mod.base_parser("").parse_args(["--sources", "Midwest", "--targets", "Midwest"])
    with pytest.raises(SystemExit, match="no pair left"):
        mod.apply_cli(mod.config(), args, quick_methods=["source_lr"], quick_skada=["SourceOnly"])


def test_results_written_before_pairs_are_read_by_pair(tmp_path):
    """A committed JSON from before units were pairs (records carry sources + target, skips and
    selections only the target) splits back into (pair, seed) units for --resume / --merge."""
    import sys

    _load("heart_shift")  # puts benchmarks/ on the path; its _common / _tables are the ones they share
    common = sys.modules["_common"]
    tables = sys.modules["_tables"]
    old = {"records": [dict(method="source_lr", side="ours", sources=["cleveland"], target="va", seed=0, n_labeled=0,
                            auroc=0.7),
                       dict(method="source_lr", side="ours", sources=["cleveland"], target="va", seed=1, n_labeled=0,
                            auroc=0.8)],
           "skipped": [dict(target="va", seed=1, n_labeled=0, method="x", reason="r")],
           "selections": [dict(target="va", seed=0, n_labeled=0, chosen="source_lr")]}
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    units = {(u["pair"], u["seed"]): u for u in common._previous_results(path)}
    assert set(units) == {("cleveland→va", 0), ("cleveland→va", 1)}
    assert len(units[("cleveland→va", 1)]["skipped"]) == 1
    assert units[("cleveland→va", 0)]["selections"][0]["chosen"] == "source_lr"
    df = tables._frame(old)
    assert set(df["pair"]) == {"cleveland→va"}
