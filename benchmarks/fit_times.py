"""Fit + predict times of the model, multi-source and relation methods on a heart-sized problem.

The problem is :func:`healthtransfer.data.synthetic.make_heart_sized` (300 source + 150 target
rows, 20 columns, 5% missing, 40 labelled target rows), the one the methods tests check for
behaviour; timing lives here, not in the tests. One thread, ``--repeats`` fits per method, the
median and the minimum reported.

    python benchmarks/fit_times.py                 # writes results/fit_times.json and .md
    python benchmarks/fit_times.py --out-dir /tmp/x --repeats 1
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

GROUPS = {
    "model": (dict(), ["continued_boosting", "linear_prior", "stacking_lr", "stacking_gbm", "recalibration_lr",
                       "recalibration_gbm", "reference_recalibration", "reference_stacking", "reference_boosting"]),
    "multisource": (dict(domains=(1, 2, 3)), ["source_weighting_lr", "source_weighting_gbm", "source_mixture_lr",
                                              "source_mixture_gbm"]),
    "relation": (dict(target_hidden_cols=3), ["graph_label_propagation", "relation_imputation_lr",
                                              "relation_imputation_gbm"]),
}


def run(repeats: int) -> list[dict]:
    from threadpoolctl import threadpool_limits

    from healthtransfer.data.synthetic import make_heart_sized
    from healthtransfer.methods import make_method

    records = []
    with threadpool_limits(1):
        for group, (data, names) in GROUPS.items():
            X, y, d = make_heart_sized(**data)
            for name in names:
                times = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    make_method(name, random_state=0).fit(X, y, sample_domain=d).predict_proba(X[300:])
                    times.append(time.perf_counter() - t0)
                records.append(dict(group=group, method=name, repeats=repeats,
                                    median_s=round(statistics.median(times), 4), min_s=round(min(times), 4)))
    return records


def write(records: list[dict], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = dict(python=platform.python_version(), machine=platform.machine(),
                note="shared 2-core machine; other jobs ran at the same time, so read the minimum")
    (out_dir / "fit_times.json").write_text(json.dumps(dict(meta=meta, records=records), indent=1) + "\n")
    lines = ["# Fit + predict times on a heart-sized problem", "",
             "`python benchmarks/fit_times.py`: `make_heart_sized` (300 source + 150 target rows, 20 columns, "
             "5% missing, 40 labelled target rows), one thread. " + meta["note"] + ".", "",
             "| group | method | median s | min s |", "|---|---|---|---|"]
    lines += [f"| {r['group']} | {r['method']} | {r['median_s']:.3f} | {r['min_s']:.3f} |" for r in records]
    (out_dir / "fit_times.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out-dir", default=str(Path(__file__).resolve().parent / "results"))
    args = p.parse_args(argv)
    records = run(args.repeats)
    write(records, Path(args.out_dir))
    print(f"wrote {args.out_dir}/fit_times.json and .md")


if __name__ == "__main__":
    main()
