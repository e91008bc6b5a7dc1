"""MkDocs hook: the pages that must never drift from the code are generated at build time.

- ``reference/study-file.md`` and ``reference/schema-file.md``: every key, from the pydantic
  models in ``healthtransfer.study.config`` and ``healthtransfer.data.schema``;
- ``reference/methods.md``: the method registry (what ``healthtransfer methods`` prints);
- ``api/estimators-*.md``: every registered estimator class (mkdocstrings) with one example
  built from its registry name (``scripts/docs_tutorials.py --api`` runs these examples);
- ``benchmarks/*.md`` + plots: from ``benchmarks/results/*.json``.

Wired up in ``mkdocs.yml`` under ``hooks:``. Nothing here writes into the repository.
"""

from __future__ import annotations

import inspect
import io
import json
import re
import sys
import types
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
if str(ROOT / "src") not in sys.path:  # build from a checkout without installing
    sys.path.insert(0, str(ROOT / "src"))

# --------------------------------------------------------------------------------------------
# pydantic models -> key tables


def _type_name(ann) -> str:
    """A short, user-facing name for a field's annotation (``list[str]``, ``int or none``)."""
    origin = typing.get_origin(ann)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(ann))
    if origin is typing.Literal:
        return " \\| ".join(f"`{a!r}`".replace("'", '"') for a in typing.get_args(ann))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(ann))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if ann is type(None):
        return "none"
    if ann is typing.Any:
        return "any"
    name = getattr(ann, "__name__", str(ann))
    return {"Path": "path", "str": "text", "float": "number", "int": "integer", "bool": "true/false",
            "dict": "table"}.get(name, name)


def _default(field) -> str:
    from pydantic_core import PydanticUndefined

    if field.is_required():
        return "**required**"
    if field.default_factory is not None:
        try:
            value = field.default_factory()
        except TypeError:  # a factory that wants the validated data
            return "(computed)"
        if hasattr(value, "model_dump"):
            return "(table)"
    else:
        value = field.default
    if value is PydanticUndefined or value is None:
        return "not set"
    return "`" + json.dumps(value, default=str) + "`"


def _constraints(field) -> str:
    out = []
    for m in field.metadata:
        for attr, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"), ("min_length", "at least"),
                          ("pattern", "matches")):
            v = getattr(m, attr, None)
            if v is not None:
                if attr == "pattern":
                    v = "one of " + ", ".join(f"`{x}`" for x in v.strip("^$()").split("|"))
                    out.append(v)
                elif attr == "min_length":
                    out.append(f"length >= {v}")
                else:
                    out.append(f"{sym} {v}")
    return "; ".join(out)


def model_fields(model) -> list[tuple[str, object]]:
    """(key as written in the file, field) for each documented field of ``model``."""
    return [(f.alias or name, f) for name, f in model.model_fields.items() if not f.exclude]


def _nested_model(field):
    from pydantic import BaseModel

    for a in (field.annotation, *typing.get_args(field.annotation)):
        if isinstance(a, type) and issubclass(a, BaseModel):
            return a
    return None


def keys_table(model) -> str:
    """A Markdown table of ``model``'s keys: type, default, allowed values, meaning."""
    rows = ["| key | type | default | allowed | meaning |", "|---|---|---|---|---|"]
    for key, f in model_fields(model):
        nested = _nested_model(f)
        typ = "table" if nested else _type_name(f.annotation)
        desc = (f.description or "").replace("|", "\\|").replace("\n", " ")
        rows.append(f"| `{key}` | {typ} | {_default(f)} | {_constraints(f)} | {desc} |")
    return "\n".join(rows)


def study_file_page() -> str:
    from healthtransfer.study import config as c

    sections = [("study", c.StudyInfo, True), ("data", c.DataSection, True),
                ("transfer", c.TransferSection, True), ("selection", c.SelectionSection, False),
                ("federated", c.FederatedSection, False), ("federated.privacy", c.PrivacySection, False)]
    top = {key for key, _ in model_fields(c.Study)}
    missing = top - {s.split(".")[0] for s, _, _ in sections}
    if missing:  # a new top-level table must be listed above, or the page would silently omit it
        raise RuntimeError(f"study file tables not documented in docs/_gen/hooks.py: {sorted(missing)}")
    out = ["# The study file: every key", "",
           "<!-- generated by docs/_gen/hooks.py from healthtransfer.study.config; do not edit -->", "",
           "A study file is TOML. It is validated by the pydantic models in `healthtransfer.study.config`;",
           "this page is generated from those models when the site is built, so it lists exactly the keys",
           "the installed version accepts. An unknown or misspelt key is an error that names the key, the",
           "table it sits in and the keys that table accepts. Relative paths resolve against the folder",
           "of the study file.", "",
           "Methods a study runs when `[transfer] methods` is not set: "
           + ", ".join(f"`{m}`" for m in c.DEFAULT_METHODS) + " (see [the method reference](methods.md)).", ""]
    for name, model, required in sections:
        doc = re.sub(r"^\[[\w.]+\]:\s*", "", (model.__doc__ or "").strip().split("\n")[0])
        doc = doc[:1].upper() + doc[1:]
        out += [f"## `[{name}]`", "", ("Required." if required else "Optional.") + " " + doc, "",
                keys_table(model), ""]
    out += ["## A complete example", "", "```toml",
            (ROOT / "examples" / "heart_cleveland_to_va.toml").read_text().rstrip(), "```", ""]
    return "\n".join(out)


def schema_file_page() -> str:
    from healthtransfer.data import schema as s

    out = ["# The per-site schema file: every key", "",
           "<!-- generated by docs/_gen/hooks.py from healthtransfer.data.schema; do not edit -->", "",
           "A schema file (TOML) declares each harmonised column once and, per site, how that site's",
           "export differs. It is validated by `healthtransfer.data.schema.DatasetSchema`; this page is",
           "generated from that model at build time. The worked example is in",
           "[Your own data](../tutorials/own-data.md).", ""]
    for title, model in [("Top level", s.DatasetSchema), ("`[[features]]` (one per harmonised column)", s.FeatureSpec),
                         ('`[sites.NAME]` and `[sites."*"]` (every site)', s.SiteSpec),
                         ("`[sites.NAME.units.COLUMN]`", s.UnitConversion),
                         ("`fhir` on a feature (its FHIR R4 code map)", s.FhirCode),
                         ("`fhir.units.UCUM` (an accepted unit)", s.FhirUnit)]:
        doc = inspect.cleandoc(model.__doc__ or "")
        # the FHIR code map's docstring is its reference (how each resource type is read)
        intro = " ".join(doc.split()) if model is s.FhirCode else doc.split("\n")[0]
        out += [f"## {title}", "", intro, "", keys_table(model), ""]
    out += ["## The bundled UCI heart schema", "", "```toml",
            (ROOT / "src/healthtransfer/data/schemas/uci_heart.toml").read_text().rstrip(), "```", ""]
    return "\n".join(out)


def cli_page() -> str:
    """Every command and option of ``healthtransfer``, from the typer app itself."""
    import click
    import typer

    from healthtransfer.cli import app

    root = typer.main.get_command(app)
    out = ["# Command line", "", "<!-- generated by docs/_gen/hooks.py from healthtransfer.cli; do not edit -->", "",
           "Every command of `healthtransfer`, generated from the command-line app when the site is built",
           "(the same text as `--help`).", ""]

    def walk(cmd, path):
        if path == ["serve-keys"]:  # typed as `serve keys ...` (see healthtransfer.cli.route)
            path = ["serve", "keys"]
        elif getattr(cmd, "hidden", False):
            return
        if isinstance(cmd, click.Group):
            if path:
                out.extend([f"## `healthtransfer {' '.join(path)}`", "", (cmd.help or "").strip(), ""])
            for name, sub in cmd.commands.items():
                walk(sub, [*path, name])
            return
        out.extend([f"## `healthtransfer {' '.join(path)}`", "", (cmd.help or "").strip(), ""])
        args = [p for p in cmd.params if isinstance(p, click.Argument)]
        opts = [p for p in cmd.params if isinstance(p, click.Option) and not p.hidden and p.name != "help"]
        if args or opts:
            out.extend(["| argument / option | meaning | default |", "|---|---|---|"])
        for p in args:
            out.append(f"| `{p.name.upper()}` | {getattr(p, 'help', '') or ''} | {'required' if p.required else ''} |")
        for p in opts:
            names = " / ".join(f"`{o}`" for o in [*p.opts, *p.secondary_opts])
            default = "" if p.default is None or p.is_flag and p.default is False else f"`{p.default}`"
            out.append(f"| {names} | {(p.help or '').replace('|', '/')} | {default} |")
        out.append("")

    glob = [p for p in root.params if isinstance(p, click.Option) and not p.hidden and p.name != "help"]
    if glob:
        out.extend(["## Options of every command", "", "Given before the command, e.g. "
                    f"`healthtransfer {glob[0].opts[0]} run ...`.", "", "| option | meaning |", "|---|---|"])
        out.extend(f"| `{p.opts[0]}` | {(p.help or '').replace('|', '/')} |" for p in glob)
        out.append("")
    walk(root, [])
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# method registry -> method reference and estimator API pages

FAMILIES = ["baseline", "instance", "feature", "model", "relation", "multisource", "scalable"]


def estimator_classes() -> dict[str, dict]:
    """Every class the registry builds: {'module.Class': {'names': [...], 'family': ...}}."""
    from healthtransfer.methods import available_methods

    out: dict[str, dict] = {}
    for name, spec in available_methods().items():
        est = spec.factory(random_state=0)
        key = f"{type(est).__module__}.{type(est).__qualname__}"
        entry = out.setdefault(key, {"names": [], "family": spec.family, "deep": spec.deep,
                                     "needs_labels": spec.needs_labels, "uses_reference": spec.uses_reference,
                                     "multiclass": spec.multiclass})
        entry["names"].append(name)
    return out


def api_example(name: str, needs_labels: bool, uses_reference: bool) -> str:
    """One runnable example for the method registered as ``name`` (run by the docs check)."""
    from healthtransfer.methods import make_method

    outcome = type(make_method(name, random_state=0)).__module__.rsplit(".", 1)[-1]
    if outcome in ("survival", "regression"):
        return _outcome_example(name, outcome, uses_reference)
    n_lab = 20 if needs_labels else 0
    lines = ["import numpy as np",
             "from healthtransfer.data.synthetic import make_shifted_domains",
             "from healthtransfer.methods import make_method", "",
             'd = make_shifted_domains("covariate", n_source=200, n_target=100, random_state=0)',
             f"y = d.masked_y({n_lab})  # target labels hidden (-1) except {n_lab} rows",
             "X = d.X"]
    if uses_reference:
        lines += ["# reference-score methods read the score's logit from the LAST column",
                  "score = 1 / (1 + np.exp(-d.X[:, 0]))",
                  "X = np.column_stack([d.X, np.log(score / (1 - score))])"]
    lines += [f'est = make_method("{name}", random_state=0)',
              "est.fit(X, y, sample_domain=d.sample_domain)  # sources >= 1, targets <= -1",
              "proba = est.predict_proba(X[d.target])",
              "assert proba.shape == (int(d.target.sum()), 2)"]
    return "\n".join(lines)


def _outcome_example(name: str, outcome: str, uses_reference: bool) -> str:
    """The example of a survival or regression estimator (y: a structured time/event array, or numbers)."""
    if outcome == "survival":
        lines = ["import numpy as np",
                 "from healthtransfer.methods import make_method",
                 "from healthtransfer.methods.survival import make_survival_domains", "",
                 "X, y, d = make_survival_domains(random_state=0)  # sources 1, target -1; y: event, time"]
    else:
        lines = ["import numpy as np",
                 "from healthtransfer.methods import make_method", "",
                 "rng = np.random.default_rng(0)",
                 "X = rng.normal(size=(300, 3)); X[200:, 0] += 1.0          # the target is shifted",
                 "y = X @ [1.0, 2.0, 0.0] + rng.normal(size=300)",
                 "d = np.r_[np.ones(200, int), -np.ones(100, int)]           # sources 1, target -1"]
    if uses_reference:
        lines += ["# reference-score methods read the existing score from the LAST column",
                  "X = np.column_stack([X, X[:, 0] + 0.5 * X[:, 1]])"]
    lines += [f'est = make_method("{name}", random_state=0)',
              "est.fit(X, y, sample_domain=d)",
              "target = X[d < 0]"]
    if outcome == "survival":
        lines += ["surv = est.predict_survival(target, [1.0, 2.0])  # P(no event by t) per row",
                  "assert surv.shape == (len(target), 2)"]
    else:
        lines += ["pred = est.predict(target)", "assert pred.shape == (len(target),)"]
    return "\n".join(lines)


def methods_page() -> str:
    from healthtransfer.methods import available_methods
    from healthtransfer.methods._registry import SCALABLE_FOR
    from healthtransfer.study.config import DEFAULT_METHODS, DEMO_METHODS

    specs = available_methods()
    classes = estimator_classes()
    page_of = {n: (k, v["family"]) for k, v in classes.items() for n in v["names"]}
    out = ["# Method reference", "",
           "<!-- generated by docs/_gen/hooks.py from healthtransfer.methods.available_methods(); do not edit -->",
           "", f"{len(specs)} methods, generated from the registry when the site is built: the same list as",
           "`healthtransfer methods` (add `--json` for a machine-readable copy). A study names them under",
           "`[transfer] methods`; `run --method NAME` runs only those.", "",
           "- Run when a study names no methods: " + ", ".join(f"`{m}`" for m in DEFAULT_METHODS) + ".",
           "- Run by `healthtransfer demo`: " + ", ".join(f"`{m}`" for m in DEMO_METHODS) + ".",
           "- Replaced automatically above about 10,000 training rows (or the method's own limit) by: "
           + ", ".join(f"`{a}` → `{b}`" for a, b in SCALABLE_FOR.items()) + ".", ""]
    for fam in sorted({s.family for s in specs.values()}, key=lambda f: (FAMILIES + [f]).index(f)):
        out += [f"## {fam}", "", "| name | target data used | deep | skada counterpart | what it does | class |",
                "|---|---|---|---|---|---|"]
        for s in (s for s in specs.values() if s.family == fam):
            cls, cfam = page_of[s.name]
            anchor = cls.rsplit(".", 1)[1].lower()
            use = s.uses_target + (" (needs n_t > 0)" if s.needs_labels else "")
            if s.uses_reference:
                use += "; uses the reference score"
            out.append(f"| `{s.name}` | {use} | {'yes' if s.deep else ''} | {s.skada_counterpart or ''} | "
                       f"{s.description.replace('|', '/')} | [`{cls.rsplit('.', 1)[1]}`](../api/estimators-{cfam}.md#{anchor}) |")
        out.append("")
    return "\n".join(out)


def api_pages() -> dict[str, str]:
    classes = estimator_classes()
    pages = {}
    for fam in sorted({v["family"] for v in classes.values()}, key=lambda f: (FAMILIES + [f]).index(f)):
        out = [f"# Estimators: {fam}", "",
               "<!-- generated by docs/_gen/hooks.py from the method registry; do not edit -->", "",
               "Every estimator is a scikit-learn classifier with skada's domain convention:",
               "`fit(X, y, sample_domain=...)` with source domains >= 1, target domains <= -1 and",
               "unlabelled target rows marked `y = -1`; `predict_proba(X)` on target rows. Each example",
               "below is run by `scripts/docs_check.sh`.", ""]
        for cls, v in classes.items():
            if v["family"] != fam:
                continue
            name = v["names"][0]
            out += [f"## `{cls.rsplit('.', 1)[1]}`", "",
                    "Registered as " + ", ".join(f"`{n}`" for n in v["names"]) + ".", "",
                    "Example (built from the registry name):", "", "```python",
                    api_example(name, v["needs_labels"], v["uses_reference"]), "```", "",
                    f"::: {cls}", "    options:", "      show_root_heading: false", "      heading_level: 3", ""]
        pages[f"api/estimators-{fam}.md"] = "\n".join(out)
    return pages


# --------------------------------------------------------------------------------------------
# benchmark results -> pages and plots

PROTOCOL_BENCHMARKS = {
    "heart_shift": "heart-shift",
    "eicu_region": "eicu-region",
    "wearable_device": "wearable-device",
}
OTHER_BENCHMARKS = {
    "federated_heart": ("federated-heart", "Federated (FLamby Fed-Heart-Disease split)"),
    "large_parquet": ("large-parquet", "Large Parquet (streaming)"),
    "scale": ("scale", "Scale (synthetic, scalable variants)"),
    "scale_study": ("scale-study", "Scale: a whole study on large data"),
    "serve_load": ("serve-load", "Service load"),
}


def _groups(df):
    """Per (pair, n_t): the mean headline metric of selected, best baseline, best of ours, best skada, the bar."""
    import pandas as pd

    metric = df.attrs["metric"]
    rows = []
    for (pair, n_t), g in df.groupby(["pair", "n_labeled"], sort=False):
        means = g.groupby(["method", "side", "family"])[metric].mean().reset_index()

        def best(mask):
            sub = means[mask(means)]
            if sub.empty:
                return None, float("nan")
            r = sub.loc[sub[metric].idxmax()]
            return r["method"], float(r[metric])

        row = {"pair": pair, "n_t": int(n_t)}
        row["selected"] = best(lambda m: m.method == "selected")[1]
        row["baseline"], row["baseline_v"] = best(lambda m: (m.side == "ours") & (m.family == "baseline"))
        row["ours"], row["ours_v"] = best(lambda m: (m.side == "ours") & (m.family != "baseline"))
        row["skada"], row["skada_v"] = best(lambda m: m.side == "skada")
        row["bar"], row["bar_v"] = best(lambda m: m.method.isin(["reference:apache_iv", "apache_iv_recal_itl"]))
        rows.append(row)
    return pd.DataFrame(rows)


def _frame(name: str):
    import pandas as pd

    data = json.loads((RESULTS / f"{name}.json").read_text())
    df = pd.DataFrame.from_records(data["records"])
    if "pair" not in df:
        df["pair"] = [f"{'+'.join(s)}→{t}" for s, t in zip(df["sources"], df["target"])]
    df.attrs["metric"] = data["config"].get("headline", "auroc")
    return data, df


def _fmt(v, d=3):
    return "—" if v != v else f"{v:.{d}f}"


def protocol_page(name: str) -> tuple[str, bytes]:
    data, df = _frame(name)
    metric = df.attrs["metric"]
    g = _groups(df)
    has_sel = g["selected"].notna().any()
    has_bar = g["bar_v"].notna().any()
    lines = [f"# {data['title']}", "",
             f"<!-- generated by docs/_gen/hooks.py from benchmarks/results/{name}.json; do not edit -->", "",
             f"Protocol: `{data['protocol']}`. Headline metric: **{metric}** on the held-out target test half,",
             f"mean over {len(data['config']['seeds'])} seeds. Generated at build time from",
             f"`benchmarks/results/{name}.json` (run by `python benchmarks/{name}.py`, "
             f"{data.get('seconds', float('nan')) / 60:.0f} min on {data['environment'].get('cpus', '?')} cores).", "",
             "'best baseline', 'best of ours' and 'best skada' are each the best by mean over seeds, so",
             "they were picked with the test labels and are optimistic; `selected` is the product's own",
             "choice, made without them. That is the number a user gets.", "",
             f"![{metric} by label budget](img/{name}.png)", "", "## Where we lose", ""]
    losses = []
    for _, r in g.iterrows():
        ref = r["selected"] if has_sel else r["ours_v"]
        who = "`selected`" if has_sel else f"our best (`{r['ours']}`)"
        for label, key in (("the best baseline", "baseline"), ("the best skada pipeline", "skada"), ("APACHE IV", "bar")):
            v = r.get(f"{key}_v", float("nan"))
            if v == v and ref == ref and v > ref + 0.005:
                losses.append(f"- **{r['pair']}, n_t = {r['n_t']}**: {who} {_fmt(ref)} < {label} "
                              f"(`{r[key]}`) {_fmt(v)} (by {v - ref:.3f}).")
        if has_sel and r["ours_v"] == r["ours_v"] and r["ours_v"] > r["selected"] + 0.02:
            losses.append(f"- **{r['pair']}, n_t = {r['n_t']}**: selection left {r['ours_v'] - r['selected']:.3f} "
                          f"on the table: `{r['ours']}` reached {_fmt(r['ours_v'])} (known only with the test labels).")
        if has_sel and r["ours_v"] == r["ours_v"] and r["skada_v"] == r["skada_v"] and r["skada_v"] > r["ours_v"] + 0.005:
            losses.append(f"- **{r['pair']}, n_t = {r['n_t']}**: even our best method (`{r['ours']}`, "
                          f"{_fmt(r['ours_v'])}) is below skada's best (`{r['skada']}`, {_fmt(r['skada_v'])}).")
    lines += (losses or ["Nowhere by more than 0.005 in mean " + metric + "."]) + [""]
    lines += ["Differences of a few thousandths are inside the seed-to-seed spread; the full tables",
              "below give the standard deviations and paired win rates.", "",
              "## Summary by pair and label budget", "",
              "| pair | n_t | " + ("selected | " if has_sel else "") + "best baseline | best of ours | best skada |"
              + (" APACHE IV |" if has_bar else ""),
              "|---|---|" + ("---|" if has_sel else "") + "---|---|---|" + ("---|" if has_bar else "")]
    for _, r in g.iterrows():
        cells = [r["pair"], str(r["n_t"])] + ([_fmt(r["selected"])] if has_sel else [])
        cells += [f"{_fmt(r['baseline_v'])} `{r['baseline']}`", f"{_fmt(r['ours_v'])} `{r['ours']}`",
                  f"{_fmt(r['skada_v'])} `{r['skada']}`"] + ([f"{_fmt(r['bar_v'])}"] if has_bar else [])
        lines.append("| " + " | ".join(cells) + " |")
    md = (RESULTS / f"{name}.md").read_text()
    body = md.split("\n", 1)[1] if md.startswith("# ") else md
    body = body.replace("\n## ", "\n### ")  # one level down under the section below
    lines += ["", "## Full tables", "",
              f"As written by `python benchmarks/{name}.py` next to the JSON (`benchmarks/results/{name}.md`).", "",
              body]
    return "\n".join(lines), _plot(g, metric, has_sel, has_bar, data["title"])


def _plot(g, metric: str, has_sel: bool, has_bar: bool, title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = list(dict.fromkeys(g["pair"]))
    ncol = min(4, len(pairs))
    nrow = -(-len(pairs) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.6 * nrow), squeeze=False, sharey=True)
    series = [("baseline_v", "best baseline", "tab:gray", "o"), ("ours_v", "best of ours", "tab:blue", "s"),
              ("skada_v", "best skada", "tab:orange", "^")]
    if has_sel:
        series.insert(0, ("selected", "selected (no test labels)", "black", "D"))
    if has_bar:
        series.append(("bar_v", "APACHE IV", "tab:red", "x"))
    for ax, pair in zip(axes.flat, pairs):
        sub = g[g["pair"] == pair]
        for col, label, color, marker in series:
            ax.plot(sub["n_t"], sub[col], marker=marker, color=color, label=label, lw=1.2, ms=4)
        ax.set_title(pair, fontsize=9)
        ax.set_xlabel("labelled target rows n_t", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(pairs):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel(f"mean {metric}", fontsize=8)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(series), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 0.95))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def federated_plot(data: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(data["table"])
    sites = list(data["sizes"])
    fig, ax = plt.subplots(figsize=(8, 3.2))
    w = 0.8 / len(sites)
    for i, s in enumerate(sites):
        ax.bar([j + i * w for j in range(len(names))], [data["table"][n][f"{s}_auroc"][0] for n in names],
               width=w, label=s)
    ax.set_xticks([j + 0.4 - w / 2 for j in range(len(names))], names, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("test AUROC (mean over seeds)", fontsize=8)
    ax.set_ylim(0.5, 1)
    ax.legend(fontsize=7, ncol=4)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def other_page(name: str, title: str) -> tuple[str, bytes | None]:
    data = json.loads((RESULTS / f"{name}.json").read_text())
    md = (RESULTS / f"{name}.md").read_text()
    body = md.split("\n", 1)[1] if md.startswith("# ") else md
    lines = [f"# {title}", "", f"<!-- generated by docs/_gen/hooks.py from benchmarks/results/{name}.*; do not edit -->",
             "", f"Not a frozen protocol: a measurement made by `python benchmarks/{name}.py`, written to",
             f"`benchmarks/results/{name}.json` and `.md` (included below at build time).", ""]
    png = None
    if name == "federated_heart":
        t = data["table"]
        best = max(t, key=lambda k: t[k]["mean_auroc"][0])
        fed = {k: v for k, v in t.items() if k.startswith("Fed")}
        best_fed = max(fed, key=lambda k: fed[k]["mean_auroc"][0])
        lines += ["![per-site AUROC](img/federated_heart.png)", "", "## Where we lose", "",
                  f"- Best mean AUROC overall: **{best}** ({t[best]['mean_auroc'][0]:.3f}); best federated "
                  f"variant: **{best_fed}** ({t[best_fed]['mean_auroc'][0]:.3f}); local-only "
                  f"{t['local-only']['mean_auroc'][0]:.3f}; pooled (not possible in practice) "
                  f"{t['pooled']['mean_auroc'][0]:.3f}.",
                  "- Differential privacy costs accuracy: compare the `DP eps=1` rows with plain FedAvg below.", ""]
        png = federated_plot(data)
    lines += ["## Tables", "", body.replace("\n## ", "\n### ")]
    return "\n".join(lines), png


def benchmark_pages() -> dict[str, str | bytes]:
    files: dict[str, str | bytes] = {}
    index = ["# Benchmarks", "", "<!-- generated by docs/_gen/hooks.py from benchmarks/results/; do not edit -->", "",
             "Every page is generated from the committed `benchmarks/results/*.json` when the site is",
             "built: the plots, the summary and the 'Where we lose' list are computed here, the full",
             "tables are the ones the benchmark script wrote next to its JSON. Each page says where",
             "healthtransfer loses to a baseline, to skada or to the clinical score.", "",
             "## Frozen protocols", ""]
    for name, slug in PROTOCOL_BENCHMARKS.items():
        if not (RESULTS / f"{name}.json").exists():
            continue
        md, png = protocol_page(name)
        files[f"benchmarks/{slug}.md"] = md
        files[f"benchmarks/img/{name}.png"] = png
        index.append(f"- [{md.splitlines()[0].lstrip('# ')}]({slug}.md)")
    index += ["", "## Other measurements", ""]
    for name, (slug, title) in OTHER_BENCHMARKS.items():
        if not (RESULTS / f"{name}.json").exists():
            continue
        md, png = other_page(name, title)
        files[f"benchmarks/{slug}.md"] = md
        if png:
            files[f"benchmarks/img/{name}.png"] = png
        index.append(f"- [{title}]({slug}.md)")
    files["benchmarks/index.md"] = "\n".join(index) + "\n"
    return files


def generated_files() -> dict[str, str | bytes]:
    """Every generated page and image, by path under docs/."""
    files: dict[str, str | bytes] = {
        "reference/study-file.md": study_file_page(),
        "reference/schema-file.md": schema_file_page(),
        "reference/methods.md": methods_page(),
        "reference/cli.md": cli_page(),
    }
    files.update(api_pages())
    files.update(benchmark_pages())
    return files


# --------------------------------------------------------------------------------------------
# mkdocs events


def on_files(files, config):
    from mkdocs.structure.files import File

    for path, content in generated_files().items():
        if files.get_file_from_path(path) is not None:
            files.remove(files.get_file_from_path(path))
        files.append(File.generated(config, path, content=content))
    return files
