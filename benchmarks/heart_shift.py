"""heart-shift v1: Cleveland → Hungarian / VA / Switzerland (UCI Heart Disease).

Every registered method at its defaults (deep ones included), the product's model selection
(``selected``), and skada's DA pipelines, on the protocol's splits: 10 features, stratified
50/50 pool/test per target and seed, n_t ∈ {0, 10, 20, 40} labelled pool rows, preprocessing
fitted on source + pool. Metrics: target-test AUROC (headline), Brier, ECE; fit time.

    python benchmarks/heart_shift.py            # the committed run
    python benchmarks/heart_shift.py --quick    # smoke run (2 seeds, 1 target)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import apply_cli, base_parser, run_or_report  # noqa: E402
from _skada_runner import SKADA_DEFAULT  # noqa: E402
from _tables import _fmt, bar_goals_section, per_target  # noqa: E402
from _units import BASELINES, BenchConfig, make_pairs  # noqa: E402

from healthtransfer.data.sources import HEART_FEATURES as FEATURES  # noqa: E402
TARGETS = ["hungarian", "va", "switzerland"]
# Every registered method at its defaults, as of this benchmark (the reference-score ones do not
# apply: heart has no reference score). The large-n approximations added later
# (iw_domain_chunked, kmm_nystroem, kliep_nystroem, tca_nystroem, ot_minibatch, coral_streamed,
# joint_mmd_minibatch) target >10k rows and are not run on ~450.
METHODS = [
    "source_lr", "source_gbm", "target_lr", "target_gbm", "pooled_lr", "pooled_gbm",
    "iw_domain_lr", "iw_domain_gbm", "kmm_lr", "kliep_lr", "tradaboost", "label_shift_em_lr", "label_shift_em_gbm",
    "domain_std_lr", "domain_std_gbm", "coral_lr", "coral_gbm", "sa_lr", "tca_lr", "ot_map_lr", "feat_aug_lr",
    "mlp_source", "joint_mmd", "joint_mmd_linear", "dann", "deep_coral", "finetune_full", "finetune_last",
    "finetune_l2sp", "continued_boosting", "linear_prior", "stacking_lr", "stacking_gbm", "recalibration_lr",
    "recalibration_gbm", "graph_label_propagation", "relation_imputation_lr", "relation_imputation_gbm",
    "source_weighting_lr", "source_weighting_gbm", "source_mixture_lr", "source_mixture_gbm",
]
DEFAULT_SEEDS = 20  # the protocol's


def load():
    from healthtransfer.data import load_dataset

    return load_dataset("uci_heart").with_features(FEATURES)


def config() -> BenchConfig:
    methods = list(METHODS)
    return BenchConfig(
        name="heart_shift",
        title="heart-shift v1: Cleveland → Hungarian / VA / Switzerland",
        protocol="../shared/benchmarks/heart-shift-v1.md (frozen)",
        pairs=make_pairs({t: ["cleveland"] for t in TARGETS}),
        budgets_by_target={t: [0, 10, 20, 40] for t in TARGETS},
        seeds=list(range(DEFAULT_SEEDS)),
        methods=methods,
        skada=list(SKADA_DEFAULT),
        headline="auroc",
        secondary=("brier", "ece"),
        notes=[
            "Our methods: every registered method at its defaults (deep ones included) — 42 methods; "
            "`reference_*` need a reference score and do not apply; the large-n approximations "
            "(`*_nystroem`, `*_chunked`, `*_minibatch`, `coral_streamed`) are not run on ~450 rows.",
            "`selected`: `healthtransfer.selection.select` on the fit rows (source + pool) over the selection "
            "pool (the 6 baselines + iw_domain_lr, coral_lr, sa_lr, label_shift_em_lr, feat_aug_lr, "
            "linear_prior, stacking_lr, recalibration_lr; no deep methods, which would cost ~5 CV refits "
            "each), then the runner's calibration step, exactly as `run_unit` does. Its ECE/Brier are after "
            "that calibration.",
            "Selection rule of this run (issue 16, 'bar-first'): the bar is the recalibrated reference score where the study has one, else the best baseline on the label-free criterion (IWCV+DEV at n_t = 0; with target labels, the bar chosen without them). A challenger replaces the bar only if its paired AUROC gain on the same out-of-fold rows exceeds z bootstrap se, z = the one-sided 1-se error rate split over the k challengers (Bonferroni; z ≈ 2.2 for 13), and 0.01, and its Brier is not worse beyond 1 se; among those, the highest lower bound wins. With < 5 labelled rows of a class the label-free choice is kept. After selection, recalibration on the labelled rows is applied only where cross-fitting shows it lowers Brier, and the n_t = 0 prior-shift adjustment needs ESS ≥ 0.4. Tuned on heart-shift seeds 0-6 only (benchmarks/selection_tuning.py replays rule variants on cached out-of-fold predictions). Frozen at commit dda540d9de69.",
            "How the committed run was produced (same code for every record of a kind): seeds 0-7 `ours` + "
            "`skada` in an earlier session; seeds 8-19 with `--phases ours skada --resume` (17 min, n_jobs=2; "
            "a re-run of hungarian seed 0 reproduced the earlier records exactly); then `--phases selection "
            "--merge` for all 60 units after the selection change; then, after iw_domain_lr's calibration was "
            "written out (scikit-learn's 5-fold sigmoid CalibratedClassifierCV, the same weights within 0.2%, warm-started "
            "folds) and the importance-weight cap made exact, "
            "`--phases ours skada --methods iw_domain_lr iw_domain_gbm kmm_lr kliep_lr --skada "
            "DiscriminatorReweight --merge` (so iw_domain_lr and skada's discriminator are timed side by side in "
            "one pass) and `--phases selection --merge` again; finally, for issue 16's frozen rule (dda540d9de69), "
            "`--phases selection --merge --n-jobs 1` for all 60 units at commit 9d43dfe (the selection code since "
            "the freeze was only refactored, and the stage memo keeps records bit for bit; the time in the line "
            "above is that last pass). Seeds 0-6 were the rule's tuning seeds: only seeds 7-19 are untouched by it.",
            "Baselines: source-only / target-only / pooled × {LR, HistGradientBoosting} (`*_gbm`).",
            "Switzerland has 8 negatives: seeds whose test half or labelled draw holds one class are skipped "
            "(see 'Seeds kept').",
        ],
    )


def selection_section(out, df) -> str:
    """The selected model vs the oracle candidate and the best baseline; its ECE at n_t >= 20."""
    if "selected" not in set(df.method):
        return ""
    pool = set(out["config"]["selection_pool"])
    au, ece = per_target(df, "auroc"), per_target(df, "ece")
    lines = ["## Selection: selected vs oracle vs best baseline", "",
             "`selected` is chosen on the fit rows only; `oracle` = the selection-pool member with the best mean "
             "test AUROC at that (target, n_t); `best baseline` = best of source/target/pooled × LR/GBM by mean "
             "test AUROC (both picked with test labels). win = share of seeds where selected beats that "
             "baseline (paired). ECE after the runner's calibration step. ECE floor: the ECE a perfectly "
             "calibrated model with the selected model's test predictions would score (labels drawn from the "
             "predictions, `healthtransfer.evaluation.ece_noise_floor`): 10-bin ECE on ~60-150 test rows is "
             "biased upward by sampling noise alone.", ""]
    lines += ["| target | n_t | selected AUROC | oracle AUROC | best baseline AUROC | sel − oracle | sel − baseline "
              "(win) | selected ECE | ECE floor | best-baseline ECE | source_lr ECE |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (t, b), g in au.groupby(["target", "n_labeled"]):
        g = g.set_index("method")
        ge = ece[(ece.target == t) & (ece.n_labeled == b)].set_index("method")
        if "selected" not in g.index:
            continue
        cand = g.loc[[m for m in g.index if m in pool]]
        orc = cand["mean"].idxmax()
        base = g.loc[[m for m in g.index if m in BASELINES]]["mean"].idxmax()
        s_, o_, b_ = (float(g.loc[m, "mean"]) for m in ("selected", orc, base))
        a = df[(df.target == t) & (df.n_labeled == b) & (df.method == "selected")].set_index("seed")["auroc"]
        c = df[(df.target == t) & (df.n_labeled == b) & (df.method == base)].set_index("seed")["auroc"]
        dd = (a - c).dropna()
        win = f"{(dd > 0).mean():.0%}" if len(dd) else "—"
        ec = (lambda m: _fmt(float(ge.loc[m, "mean"]), float(ge.loc[m, "std"])) if m in ge.index else "—")
        sel_rows = df[(df.target == t) & (df.n_labeled == b) & (df.method == "selected")]
        floor = _fmt(float(sel_rows["ece_floor"].mean())) if "ece_floor" in sel_rows and sel_rows["ece_floor"].notna().any() else "—"
        lines.append(f"| {t} | {b} | {_fmt(s_, float(g.loc['selected', 'std']))} | {orc} {_fmt(o_)} | {base} {_fmt(b_)} | "
                     f"{s_ - o_:+.3f} | {s_ - b_:+.3f} ({win}) | {ec('selected') if b >= 20 else '(n_t < 20) ' + ec('selected')} | "
                     f"{floor} | {ec(base)} | {ec('source_lr')} |")
    lines.append("")
    goals = bar_goals_section(out, df, lambda means: means[[m for m in means.index if m in BASELINES]].idxmax(),
                              "the best baseline of the cell (source/target/pooled × LR/GBM by mean test AUROC, "
                              "so optimistic)")
    return "\n".join(lines) + "\n" + goals + "\n" + speed_section(df)


# our method -> skada's counterpart (same idea, both ending in logistic regression)
COUNTERPARTS = {"iw_domain_lr": "DiscriminatorReweight", "kmm_lr": "KMM", "kliep_lr": "KLIEP", "tca_lr": "TCA",
                "ot_map_lr": "OTMapping", "coral_lr": "CORAL", "sa_lr": "SubspaceAlignment"}


def speed_section(df) -> str:
    """The speed goals: every non-deep method under 1 s per heart pair, deep ones under 20 s, and
    none more than 2x slower than its skada counterpart (median fit seconds, same run)."""
    from healthtransfer.methods import available_methods, get_method

    med = df.groupby("method")["fit_seconds"].median()
    mx = df.groupby("method")["fit_seconds"].max()
    ours = [m for m in med.index if m in set(available_methods()) and m in set(df[df.side == "ours"].method)]
    deep = [m for m in ours if get_method(m).deep]
    flat = [m for m in ours if m not in deep]
    lines = ["## Speed against the goals", "",
             "Median fit seconds per (target, seed, n_t) in this run, single-threaded; max in brackets (a loaded "
             "machine inflates single fits). Goals: non-deep < 1 s, deep < 20 s, ≤ 2x the skada counterpart.", ""]
    slow = max(flat, key=lambda m: med[m]) if flat else None
    slow_d = max(deep, key=lambda m: med[m]) if deep else None
    for group, names, limit, worst in (("non-deep", flat, 1.0, slow), ("deep", deep, 20.0, slow_d)):
        if not worst:
            continue
        over = [f"{m} {med[m]:.2f} s" for m in names if med[m] >= limit]
        lines.append(f"- {group}: {len(names) - len(over)} of {len(names)} methods under {limit:g} s (median); "
                     f"slowest {worst} {med[worst]:.3f} s [max {mx[worst]:.2f}]"
                     + (f"; over the goal: {', '.join(over)}." if over else "."))
    lines += ["", "| ours | median s | skada counterpart | median s | ours / skada | goal ≤ 2x |", "|---|---|---|---|---|---|"]
    for m, k in COUNTERPARTS.items():
        sk = f"skada:{k}"
        if m in med.index and sk in med.index and med[sk] > 0:
            r = med[m] / med[sk]
            lines.append(f"| {m} | {med[m]:.3f} | {sk} | {med[sk]:.3f} | {r:.1f}x | {'met' if r <= 2 else 'NOT met'} |")
    lines.append("")
    return "\n".join(lines)


def main(argv=None):
    args = base_parser(__doc__).parse_args(argv)
    cfg, out_dir = apply_cli(config(), args, quick_methods=["source_lr", "source_gbm", "pooled_lr", "coral_lr"],
                             quick_skada=["SourceOnly", "CORAL"])
    out = run_or_report(cfg, args, load, out_dir, extra_md=selection_section)
    print(f"wrote {out_dir / (cfg.name + '.json')} and .md in {out['seconds']:.0f}s")
    return out


if __name__ == "__main__":
    main()
