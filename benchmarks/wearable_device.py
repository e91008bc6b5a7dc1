"""Wearable device shift: Apple Watch → Fitbit and Fitbit → Apple Watch (6 activity classes).

Subject-grouped 50/50 pool/test split of the target device (the loader's ``subject`` proxy,
49 participants), n_t ∈ {0, 30, 120} labelled pool minutes, preprocessing fitted on source +
pool. Metrics: accuracy (headline) and macro-F1 on the target test half; fit time.

    python benchmarks/wearable_device.py            # the committed run
    python benchmarks/wearable_device.py --quick    # smoke run (2 seeds, 1 direction)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DATA_DIR, apply_cli, base_parser, run_or_report  # noqa: E402
from _tables import _fmt, per_target  # noqa: E402
from _units import BenchConfig, make_pairs  # noqa: E402

DEFAULT_SEEDS = 10
METHODS = [
    "source_lr", "source_gbm", "target_lr", "target_gbm", "pooled_lr", "pooled_gbm",
    "iw_domain_lr", "label_shift_em_lr", "domain_std_lr", "domain_std_gbm", "coral_lr", "coral_gbm", "sa_lr",
    "ot_map_lr", "feat_aug_lr", "mlp_source", "dann", "deep_coral", "finetune_last",
    "continued_boosting", "linear_prior", "stacking_lr", "graph_label_propagation",
]
SKADA = ["SourceOnly", "CORAL", "SubspaceAlignment", "LinearOTMapping", "DiscriminatorReweight", "GaussianReweight"]


def load():
    from healthtransfer.data import load_dataset

    return load_dataset("wearable", data_dir=DATA_DIR)


def config() -> BenchConfig:
    return BenchConfig(
        name="wearable_device",
        title="Wearable device shift: Apple Watch ↔ Fitbit, 6 activities",
        protocol="data README §4 (no frozen protocol); subject-grouped splits as in heart-shift/eicu-region",
        pairs=make_pairs({"fitbit": ["apple_watch"], "apple_watch": ["fitbit"]}),
        budgets_by_target={"fitbit": [0, 30, 120], "apple_watch": [0, 30, 120]},
        seeds=list(range(DEFAULT_SEEDS)),
        methods=list(METHODS),
        skada=list(SKADA),
        selection=False,
        headline="accuracy",
        secondary=("macro_f1",),
        notes=[
            "Target column = the device evaluated on; the source is the other device "
            "(fitbit = Apple Watch → Fitbit, apple_watch = Fitbit → Apple Watch).",
            "Split: `StratifiedGroupKFold` on the target device's subjects (the (age, gender, height, weight) "
            "proxy), so a participant is never in both pool and test; the n_t labelled minutes are drawn "
            "stratified from the pool (minutes, not subjects). Chance accuracy ≈ 0.2.",
            "Features: the loader's 16 (including the subject descriptors age/gender/height/weight). "
            "One shared scaler is fitted on source + pool; `domain_std_*` standardise each domain "
            "separately (the devices' feature scales differ by orders of magnitude).",
            "No `selected` row: selection was not part of this benchmark's brief and its CV refits of "
            "multi-class boosting on ~5,000 rows would not fit the time budget.",
            "skada KMM / TCA / JDOT are not run: n x n kernels or couplings on ~5,000 rows.",
            "Not run: skada OT (exact / entropic) and KLIEP (n x n couplings / kernels on ~5,000 rows).",
            "How the committed run was produced: seeds 0-2 in an earlier session (heavily loaded machine), "
            "seeds 3-9 with `--phases ours skada extra --resume` on a reduced method list (27 s per unit on a "
            "quiet core), then `--phases ours --methods pooled_gbm iw_domain_lr coral_gbm domain_std_gbm mlp_source dann "
            "deep_coral finetune_last continued_boosting linear_prior graph_label_propagation --merge --n-jobs 1` "
            "for all 20 units (the methods the reduced list had left out, and domain_std_gbm after a change to its "
            "fit; run beside the eICU benchmark, so its fit times are inflated; the time in the line above is that "
            "pass).",
        ],
    )


def goals_section(out, df) -> str:
    """The two goals: n_t = 0 accuracy >= 0.40 each direction; n_t = 120 beats target-only."""
    acc, f1 = per_target(df, "accuracy"), per_target(df, "macro_f1")
    side = df.groupby("method")["side"].first().to_dict()
    fam = df.groupby("method")["family"].first().to_dict()
    lines = ["## Goals", "", "Goal 1: n_t = 0 accuracy ≥ 0.40 in both directions. Goal 2: at n_t = 120 a transfer "
             "method beats target-only (best of target_lr / target_gbm). 'best' = highest mean accuracy, picked "
             "with test labels (optimistic); win = share of seeds where it beats the target-only model paired.", ""]
    lines += ["| direction | n_t | best ours (transfer) acc | macro-F1 | best skada acc | source-only best | "
              "target-only best | goal |", "|---|---|---|---|---|---|---|---|"]
    for (t, b), g in acc.groupby(["target", "n_labeled"]):
        if b not in (0, 120):
            continue
        g = g.set_index("method")
        gf = f1[(f1.target == t) & (f1.n_labeled == b)].set_index("method")
        ours = [m for m in g.index if side.get(m) == "ours" and fam.get(m) != "baseline"]
        sk = [m for m in g.index if side.get(m) == "skada" and m != "skada:SourceOnly"]
        bo = max(ours, key=lambda m: g.loc[m, "mean"])
        bs = max(sk, key=lambda m: g.loc[m, "mean"]) if sk else None
        so = max([m for m in ("source_lr", "source_gbm") if m in g.index], key=lambda m: g.loc[m, "mean"])
        to = max([m for m in ("target_lr", "target_gbm") if m in g.index], key=lambda m: g.loc[m, "mean"], default=None)
        src = "Apple Watch → Fitbit" if t == "fitbit" else "Fitbit → Apple Watch"
        if b == 0:
            goal = "met" if g.loc[bo, "mean"] >= 0.40 else "NOT met"
        else:
            a = df[(df.target == t) & (df.n_labeled == b) & (df.method == bo)].set_index("seed")["accuracy"]
            c = df[(df.target == t) & (df.n_labeled == b) & (df.method == to)].set_index("seed")["accuracy"]
            dd = (a - c).dropna()
            goal = (("met" if dd.mean() > 0 else "NOT met") + f" (Δ {dd.mean():+.3f}, win {(dd > 0).mean():.0%})")
        lines.append(
            f"| {src} | {b} | {bo} {_fmt(float(g.loc[bo, 'mean']), float(g.loc[bo, 'std']))} | "
            f"{_fmt(float(gf.loc[bo, 'mean']))} | {bs or '—'} {_fmt(float(g.loc[bs, 'mean'])) if bs else ''} | "
            f"{so} {_fmt(float(g.loc[so, 'mean']))} | "
            f"{(to + ' ' + _fmt(float(g.loc[to, 'mean']))) if to else '—'} | {goal} |")
    lines.append("")
    lines += signal_section(load())
    return "\n".join(lines)


def signal_section(ds) -> list[str]:
    """Why n_t = 0 stays near chance: per device, how each measured feature follows the activity
    (Spearman with the intensity order Lying < ... < Running 7 METs, and the share of its rank
    variance the activity explains). Computed from the data, labels of all rows (a diagnostic,
    not a method)."""
    f = ds.frame
    measured = [c for c in ds.features if c not in ("age", "gender", "height", "weight")]
    rows = {}
    for dev, g in f.groupby(ds.domain):
        k = g[ds.label].astype(int)  # class codes follow the intensity order
        for c in measured:
            r = g[c].rank()
            eta = r.groupby(k).transform("mean").var() / r.var() if r.var() > 0 else float("nan")
            rows.setdefault(c, {})[dev] = (r.corr(k.rank()), eta)
    devs = sorted({d for v in rows.values() for d in v})
    lines = ["## Why the devices do not share a signal", "",
             "Per device, over all its minutes: Spearman correlation of each measured feature with the activity's "
             "intensity order (Lying < Sitting < walk < Running 3 < 5 < 7 METs), and η² = share of the feature's "
             "rank variance explained by the activity. A label-free method must assume a feature means the same on "
             "both devices; here the signal sits in different columns, and heart rate even flips sign.", "",
             "| feature | " + " | ".join(f"{d} Spearman | {d} η²" for d in devs) + " |",
             "|---|" + "---|---|" * len(devs)]
    for c, v in rows.items():
        lines.append(f"| {c} | " + " | ".join(f"{v[d][0]:+.2f} | {v[d][1]:.2f}" for d in devs) + " |")
    lines.append("")
    return lines


def main(argv=None):
    args = base_parser(__doc__).parse_args(argv)
    cfg, out_dir = apply_cli(config(), args, quick_methods=["source_lr", "target_lr", "domain_std_lr"],
                             quick_skada=["SourceOnly", "CORAL"])
    out = run_or_report(cfg, args, load, out_dir, extra_md=goals_section)
    print(f"wrote {out_dir / (cfg.name + '.json')} and .md in {out['seconds']:.0f}s")
    return out


if __name__ == "__main__":
    main()
