"""How long a few-thousand-row study takes, and where its CPU-seconds go (issue 21).

The study: the wearable table of ``../shared/data`` (Apple Watch -> Fitbit minute rows, every
second row: 3,132 rows), a binary label (vigorous activity: running at 5 or 7 METs), the 9
sensor features, subjects as groups; 18 methods from every family, 10 seeds, label budgets
0 / 20 / 50, selection, calibration, diagnostics, report and bundle: ``healthtransfer run``
exactly as a user runs it (``--jobs 2``, the default).

Two phases, both in one run of this script so the machine's load is shared:

- ``wall``: the whole command in a child process, per source tree given (``--tree`` may be
  repeated: the current tree and, e.g., a checkout of the commit before the change), timed
  alternately; the records of the trees are compared bit for bit (fit times aside).
- ``profile``: the same study with 2 seeds in this process on one core, with each stage and
  each method's fits timed (CPU seconds): the evaluated fits, the selection's refits, the
  scoring + bootstrap, the diagnostics, the final model, the report + bundle.

    python benchmarks/study_speed.py                              # the committed run
    python benchmarks/study_speed.py --tree /tmp/base/src         # + the tree before, side by side
    python benchmarks/study_speed.py --quick                      # smoke: 2 seeds, profile only

Writes ``benchmarks/results/study_speed.{json,md}`` (``results/quick/`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import weakref
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA_DIR = Path(os.environ.get("HEALTHTRANSFER_DATA", ROOT.parent / "shared" / "data"))

FEATURES = ["steps", "heart_rate", "calories", "distance", "entropy_heart", "entropy_steps", "resting_heart",
            "corr_heart_steps", "norm_heart"]
METHODS = ["source_lr", "source_gbm", "target_lr", "target_gbm", "pooled_lr", "pooled_gbm",
           "iw_domain_lr", "kmm_lr", "label_shift_em_lr", "coral_lr", "domain_std_lr", "sa_lr", "ot_map_lr",
           "feat_aug_lr", "continued_boosting", "linear_prior", "stacking_lr", "relation_imputation_lr"]
GOAL_WALL_S = 180.0


def write_study(folder: Path, seeds: int) -> Path:
    """The table (a CSV) and the study file; returns the study file's path."""
    from healthtransfer.data import load_dataset

    ds = load_dataset("wearable", data_dir=DATA_DIR)
    f = ds.frame.iloc[::2].copy()
    names = list(ds.class_names)
    vigorous = {names.index("Running 5 METs"), names.index("Running 7 METs")}
    f["vigorous"] = f[ds.label].map(lambda a: int(a in vigorous))
    folder.mkdir(parents=True, exist_ok=True)
    f[FEATURES + [ds.domain, ds.group, "vigorous"]].to_csv(folder / "wearable_vigorous.csv", index=False)
    methods = ", ".join(f'"{m}"' for m in METHODS)
    study = folder / "study.toml"
    study.write_text(f"""[study]
name = "study-speed"
description = "wearable Apple Watch -> Fitbit, vigorous activity (issue 21's speed study)"
[data]
path = "wearable_vigorous.csv"
domain = "{ds.domain}"
label = "vigorous"
group = "{ds.group}"
[transfer]
sources = ["apple_watch"]
target = "fitbit"
labeled_target = [0, 20, 50]
seeds = {seeds}
methods = [{methods}]
""")
    return study


def _records(path: Path) -> list[dict]:
    res = json.loads(path.read_text())
    return [{k: v for k, v in r.items() if k != "fit_seconds"} for r in res["results"]]


def wall(study: Path, tree: str, out: Path, jobs: int) -> dict:
    """``healthtransfer run`` in a child process with ``tree`` first on the path."""
    env = dict(os.environ, PYTHONPATH=tree, HEALTHTRANSFER_DATA=str(DATA_DIR), OMP_NUM_THREADS="1")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "healthtransfer.cli", "run", str(study), "--out", str(out),
                           "--jobs", str(jobs)], env=env, capture_output=True, text=True, cwd=study.parent)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise SystemExit(f"healthtransfer run failed with {tree}:\n{proc.stderr[-3000:]}")
    res = json.loads((out / "results.json").read_text())
    fits = sum(r.get("fit_seconds") or 0.0 for r in res["results"])
    return dict(tree=tree, wall_s=round(seconds, 1), cpu_s=round(after.ru_utime + after.ru_stime
                                                                  - before.ru_utime - before.ru_stime, 1),
                fit_sum_s=round(fits, 1), run_study_s=round(res["runtime_seconds"], 1), jobs=jobs,
                load_1min=round(os.getloadavg()[0], 2), out=str(out))


@contextlib.contextmanager
def _instrumented():
    """Time each stage and each candidate's fits (CPU seconds of this process)."""
    import healthtransfer.selection as selection
    import healthtransfer.study.final as final
    import healthtransfer.study.outputs as outputs
    import healthtransfer.study.run as run
    from healthtransfer.methods._base import TransferClassifier

    stage = ["other"]
    cpu = defaultdict(float)
    fits = defaultdict(lambda: [0, 0.0])  # (stage, method) -> [calls, seconds]
    names: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
    clock = time.process_time

    def staged(fn, name):
        def wrapper(*a, **k):
            prev, stage[0] = stage[0], name
            t0 = clock()
            try:
                return fn(*a, **k)
            finally:
                cpu[name] += clock() - t0
                stage[0] = prev
                if prev != "other":
                    cpu[prev] -= clock() - t0  # nested: charged to the inner stage only
        return wrapper

    orig_fit = TransferClassifier.fit

    def fit(self, *a, **k):
        t0 = clock()
        try:
            return orig_fit(self, *a, **k)
        finally:
            f = fits[(stage[0], names.get(self, type(self).__name__))]
            f[0] += 1
            f[1] += clock() - t0

    from healthtransfer.selection._select import Candidate

    orig_factory = Candidate.factory

    def factory(self, random_state=None):
        est = orig_factory(self, random_state=random_state)
        names[est] = self.name
        return est

    patches = [(selection, "select", staged(selection.select, "selection refits and scoring")),
               (Candidate, "factory", factory),
               (run, "_record", staged(run._record, "scoring + bootstrap intervals")),
               (run, "diagnose_targets", staged(run.diagnose_targets, "shift diagnostics")),
               (run, "prepare_unit", staged(run.prepare_unit, "split + preprocessing")),
               (final, "finalise", staged(final.finalise, "final model + explanations")),
               (outputs, "write_study_outputs", staged(outputs.write_study_outputs, "report + bundle + check")),
               (TransferClassifier, "fit", fit)]
    saved = [(o, n, getattr(o, n)) for o, n, _ in patches]
    for o, n, v in patches:
        setattr(o, n, v)
    try:
        yield cpu, fits
    finally:
        for o, n, v in saved:
            setattr(o, n, v)


def profile(study: Path, out: Path) -> dict:
    """Run the study in this process (one core) with the stages and fits timed."""
    from threadpoolctl import threadpool_limits

    from healthtransfer.cli import _execute
    from healthtransfer.study import load_study

    st = load_study(study)
    os.chdir(study.parent)
    t0, c0 = time.perf_counter(), time.process_time()
    with _instrumented() as (cpu, fits), threadpool_limits(1), contextlib.redirect_stdout(open(os.devnull, "w")):
        _execute(st, out, None, 1, None)
    total_cpu, total_wall = time.process_time() - c0, time.perf_counter() - t0
    fit_stage = defaultdict(float)
    for (stage, _), (_, s) in fits.items():
        fit_stage[stage] += s
    stages = {k: round(v, 2) for k, v in cpu.items()}
    # the evaluated fits are what remains of the unit loop outside selection / scoring
    stages["evaluated fits"] = round(fit_stage.get("other", 0.0), 2)
    stages["other (imports, loading, bookkeeping)"] = round(total_cpu - sum(stages.values()), 2)
    by_method = defaultdict(dict)
    for (stage, name), (n, s) in fits.items():
        key = "evaluated" if stage == "other" else ("selection" if stage.startswith("selection") else stage)
        d = by_method[name].setdefault(key, [0, 0.0])
        d[0] += n
        d[1] += s
    by_method = {m: {k: dict(fits=v[0], cpu_s=round(v[1], 2)) for k, v in d.items()} for m, d in by_method.items()}
    return dict(seeds=st.transfer.seeds, cpu_s=round(total_cpu, 1), wall_s=round(total_wall, 1), stages=stages,
                by_method=by_method)


def write(result: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "study_speed.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = ["# Study speed: a 3,132-row, 18-method, 10-seed, 3-budget study", "",
             "`python benchmarks/study_speed.py` (" + result["command"] + "). " + __doc__.split("\n\n")[1]
             .replace("\n", " "), "",
             f"Machine: {result['machine']}; 1-minute load at the start {result['load_start']}.", ""]
    if result.get("wall"):
        lines += ["## Wall time (`healthtransfer run --jobs 2`, the whole command)", "",
                  "| tree | wall s | CPU s | sum of fit times s | bound 1.5 × fits / 2 + 30 s | ≤ 180 s | ≤ bound |",
                  "|---|---|---|---|---|---|---|"]
        for w in result["wall"]:
            bound = 1.5 * w["fit_sum_s"] / 2 + 30
            lines.append(f"| `{w['label']}` | {w['wall_s']} | {w['cpu_s']} | {w['fit_sum_s']} | {bound:.0f} | "
                         f"{'yes' if w['wall_s'] <= GOAL_WALL_S else 'no'} | "
                         f"{'yes' if w['wall_s'] <= bound else 'no'} |")
        if result.get("plan"):
            pl = result["plan"]
            lines += ["", f"`run --dry-run` predicted {pl['estimated_wall_seconds']:.0f} s wall ({pl['fits']} fits + "
                      f"{pl['selection_refits']} selection refits, priced on samples of the data)."]
        if result.get("records_identical") is not None:
            lines += ["", "Records of the trees (every metric, interval, choice; fit times aside): "
                      + ("**identical**." if result["records_identical"] else "**differ**: " + result["differences"])]
        lines.append("")
    p, b = result["profile"], result.get("profile_before")
    lines += [f"## Where the CPU-seconds go ({p['seeds']} seeds, one process, one core)", "",
              f"Total {p['cpu_s']} CPU s ({p['wall_s']} s wall)"
              + (f"; the tree before (`{b['tree']}`): {b['cpu_s']} CPU s." if b else "."), ""]
    if b:
        lines += ["| stage | CPU s | share | before: CPU s | before: share |", "|---|---|---|---|---|"]
        for k, v in sorted(p["stages"].items(), key=lambda kv: -kv[1]):
            w = b["stages"].get(k, 0.0)
            lines.append(f"| {k} | {v:.1f} | {v / max(p['cpu_s'], 1e-9):.0%} | {w:.1f} | "
                         f"{w / max(b['cpu_s'], 1e-9):.0%} |")
    else:
        lines += ["| stage | CPU s | share |", "|---|---|---|"]
        for k, v in sorted(p["stages"].items(), key=lambda kv: -kv[1]):
            lines.append(f"| {k} | {v:.1f} | {v / max(p['cpu_s'], 1e-9):.0%} |")
    lines += ["", "By method: fits and CPU seconds of the evaluated fits and of the selection's refits"
              + (" (before: the same for the tree before)." if b else "."), "",
              "| method | evaluated fits | evaluated s | selection refits | selection s |"
              + (" before: evaluated s | before: selection s |" if b else ""),
              "|---|---|---|---|---|" + ("---|---|" if b else "")]
    rows = sorted(p["by_method"].items(), key=lambda kv: -sum(v["cpu_s"] for v in kv[1].values()))
    zero = dict(fits=0, cpu_s=0.0)
    for m, d in rows:
        e, s = d.get("evaluated", zero), d.get("selection", zero)
        line = f"| {m} | {e['fits']} | {e['cpu_s']:.2f} | {s['fits']} | {s['cpu_s']:.2f} |"
        if b:
            bd = b["by_method"].get(m, {})
            line += f" {bd.get('evaluated', zero)['cpu_s']:.2f} | {bd.get('selection', zero)['cpu_s']:.2f} |"
        lines.append(line)
    if result.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in result["notes"]]
    (out_dir / "study_speed.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tree", action="append", default=[],
                    help="another source tree (a `src` folder) to time side by side with this one")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--profile-seeds", type=int, default=2)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="profile only, 1 seed")
    ap.add_argument("--profile-only", action="store_true", help="the profile phase only (no wall phase)")
    ap.add_argument("--profile-tree", default=None,
                    help="also profile this source tree (in a child process), shown beside this tree's profile")
    ap.add_argument("--out-dir", type=Path, default=None)
    ap.add_argument("--note", action="append", default=[])
    args = ap.parse_args(argv)
    out_dir = args.out_dir or HERE / "results" / ("quick" if args.quick else "")
    result = dict(command="python benchmarks/study_speed.py " + " ".join(argv or sys.argv[1:]),
                  machine=f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
                  load_start=round(os.getloadavg()[0], 2), notes=list(args.note))
    with tempfile.TemporaryDirectory(prefix="study_speed_") as tmp:
        tmp = Path(tmp)
        if args.profile_tree:
            env = dict(os.environ, PYTHONPATH=str(Path(args.profile_tree).resolve()))
            subprocess.run([sys.executable, __file__, "--profile-only", "--profile-seeds", str(args.profile_seeds),
                            "--out-dir", str(tmp / "profile_tree")], env=env, check=True)
            before = json.loads((tmp / "profile_tree" / "study_speed.json").read_text())["profile"]
            result["profile_before"] = dict(before, tree=args.profile_tree)
        if not (args.quick or args.profile_only):
            study = write_study(tmp / "study", args.seeds)
            from healthtransfer.study import load_study
            from healthtransfer.study._plan import plan_study

            plan = plan_study(load_study(study), n_jobs=args.jobs)  # what `run --dry-run` predicts
            result["plan"] = {k: plan[k] for k in ("units", "fits", "selection_refits", "estimated_fit_seconds",
                                                   "estimated_selection_seconds", "estimated_wall_seconds")}
            trees = [str(ROOT / "src")] + [str(Path(t).resolve()) for t in args.tree]
            result["wall"] = []
            for i, tree in enumerate(trees):
                w = wall(study, tree, tmp / f"out{i}", args.jobs)
                w["label"] = "this tree" if i == 0 else tree
                result["wall"].append(w)
                print(json.dumps(w), flush=True)
            if len(trees) > 1:
                recs = [_records(Path(w["out"]) / "results.json") for w in result["wall"]]
                same = all(r == recs[0] for r in recs[1:])
                result["records_identical"] = same
                if not same:
                    diff = [(a.get("method"), a.get("n_labeled"), a.get("seed"))
                            for a, b in zip(recs[0], recs[1]) if a != b]
                    result["differences"] = f"{len(diff)} of {len(recs[0])} records, e.g. {diff[:5]}"
        pstudy = write_study(tmp / "profile", 1 if args.quick else args.profile_seeds)
        result["profile"] = profile(pstudy, tmp / "profile_out")
        print(json.dumps(result["profile"]["stages"]), flush=True)
    write(result, out_dir)
    print(f"wrote {out_dir / 'study_speed.md'}")


if __name__ == "__main__":
    main()
