"""The study file: one TOML that says which data, which sites, which budgets and methods.

Example
-------
>>> study = Study.model_validate({
...     "study": {"name": "heart"},
...     "data": {"dataset": "uci_heart"},
...     "transfer": {"sources": ["cleveland"], "target": "va"},
... })
>>> study.transfer.labeled_target
[0, 10, 20, 40]
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import UserInputError

__all__ = ["Study", "load_study", "DEFAULT_METHODS", "BASELINE_METHODS", "REFERENCE_METHODS", "FederatedSection", "PrivacySection"]

# The methods a study runs when it names none: the baselines and a cheap, robust member of
# each family. `healthtransfer methods` lists them all.
BASELINE_METHODS = [
    "source_lr", "source_gbm", "target_lr", "target_gbm", "pooled_lr", "pooled_gbm",
]
DEFAULT_METHODS = [
    *BASELINE_METHODS,
    "iw_domain_lr",             # instance: domain-classifier importance weights
    "coral_lr",                 # feature: CORAL alignment of second moments
    "linear_prior",             # model: target fit shrunk toward the source solution
    "relation_imputation_lr",   # relation: features a site lacks imputed from relations learned elsewhere
]
# added to the defaults when the study names a `reference_score` (an existing clinical score):
# the ways to transfer *from* that score, which the selection must weigh against it
REFERENCE_METHODS = ["reference_recalibration", "reference_boosting"]

_FIX = {
    "dataset": "set `dataset` to a built-in source (uci_heart, eicu_demo, mimic3_demo, wearable) or `path` to a CSV/Parquet file",
    "sources": "list the source sites, e.g. sources = [\"cleveland\"]",
    "target": "name the target site, e.g. target = \"va\"",
    "labeled_target": "give label budgets as non-negative integers, e.g. [0, 10, 20, 40]",
    "seeds": "give a positive number of seeds, e.g. seeds = 20",
    "test_fraction": "give a fraction strictly between 0 and 1, e.g. 0.5",
    "study": "start the file with a [study] table holding `name = \"...\"`",
    "data": "add a [data] table with `path` (plus `domain` and `label`) or `dataset`",
    "transfer": "add a [transfer] table with `sources = [...]` and `target = \"...\"`",
    "name": "give the study a non-empty name, e.g. name = \"heart\"",
    "methods": "list method names, e.g. methods = [\"source_lr\"]; `healthtransfer methods` lists them",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StudyInfo(_Strict):
    name: str = Field(min_length=1, description="the study's name, shown in the report and the bundle")
    description: str = Field(default="", description="one line on what the study is for")


class DataSection(_Strict):
    path: Path | None = Field(default=None, description="a CSV or Parquet file (or folder of Parquet files) "
                              "with one row per patient; give `path` or `dataset`")
    dataset: str | None = Field(default=None, description="a built-in source: uci_heart, eicu_demo, mimic3_demo, "
                                "wearable")
    data_dir: Path | None = Field(default=None, description="folder with the staged built-in datasets "
                                  "(default: --data-dir or $HEALTHTRANSFER_DATA)")
    options: dict[str, Any] = Field(default_factory=dict, description="options for a built-in source, e.g. domain_by")
    domain: str | None = Field(default=None, description="column naming each row's site (required with `path`)")
    label: str | None = Field(default=None, description="outcome column, binary or multi-class (required with `path`)")
    positive: Any | None = Field(default=None, description="the positive class of a binary label")
    features: list[str] | None = Field(default=None, description="feature columns; default: every other column")
    categorical: list[str] | None = Field(default=None, description="categorical features; default: inferred")
    group: str | None = Field(default=None, description="patient id column: rows of one group never straddle a split")
    reference_score: str | None = Field(default=None, description="an existing risk score's column (a probability): "
                                        "evaluated as a bar, never a feature")
    schema_file: Path | None = Field(default=None, alias="schema", description="per-site schema TOML (units, codes, "
                                     "sentinels, ranges)")
    delimiter: str | None = Field(default=None, description="CSV delimiter; default: detected")
    encoding: str = Field(default="utf-8", description="text encoding of a CSV")
    subgroups: list[str] = Field(default_factory=list, description="columns for subgroup metrics")
    # outcomes beyond classes (see healthtransfer.data.outcomes and study/outcome.py)
    task: Literal["classification", "survival", "regression"] | None = Field(
        default=None, description="default: survival when `time` is given, regression for a numeric label with "
        "many values, else classification")
    time: str | None = Field(default=None, description="time to event or censoring (survival)")
    event: str | None = Field(default=None, description="1 = event, 0 = censored (survival)")
    horizons: list[float] | None = Field(default=None, description="times at which risks are reported (survival)")
    time_unit: str = Field(default="days", description="unit of `time` and `horizons`, as the report and "
                           "the service print it (survival)")
    transform: Literal["none", "log", "log1p"] = Field(
        default="none", description="fit a continuous label on this scale; predictions are reported back "
        "on the original scale (regression)")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _one_source(self):
        if (self.path is None) == (self.dataset is None):
            raise ValueError("give exactly one of `path` (a CSV/Parquet file) or `dataset` (a built-in source); "
                             "fix: keep one of the two keys under [data]")
        if (self.time is None) != (self.event is None):
            raise ValueError("a survival study names both `time` and `event`; fix: add the missing one under [data], "
                             "e.g. time = \"days_to_event_or_censoring\", event = \"event_flag\"")
        if self.time is not None:
            if self.task not in (None, "survival"):
                raise ValueError(f"`time`/`event` make a survival study, but task = \"{self.task}\"; "
                                 "fix: remove `task` or set task = \"survival\"")
            if not self.horizons:
                raise ValueError("a survival study needs `horizons` (the times at which risks are reported); "
                                 "fix: add e.g. horizons = [7, 28] in the time column's unit")
        elif self.task == "survival":
            raise ValueError("task = \"survival\" needs `time` and `event`; fix: name both columns under [data]")
        if self.horizons is not None:
            if self.time is None:
                raise ValueError("`horizons` only apply to a survival study; fix: add `time` and `event` or remove it")
            if any(not (h > 0) for h in self.horizons):
                raise ValueError("horizons must be positive times; fix: e.g. horizons = [7, 28]")
            self.horizons = sorted(set(float(h) for h in self.horizons))
        if self.transform != "none" and self.task == "classification":
            raise ValueError("`transform` applies to a continuous label; fix: set task = \"regression\" or remove it")
        if self.path is not None and (self.domain is None or (self.label is None and self.time is None)):
            raise ValueError("a `path` study must name its `domain` and `label` columns (or `time` and `event`); "
                             "fix: add `domain = \"site column\"` and `label = \"outcome column\"` under [data]")
        return self

    @field_validator("features", "categorical")
    @classmethod
    def _unique(cls, v):
        if v is not None:
            dup = sorted({x for x in v if v.count(x) > 1})
            if dup:
                raise ValueError(f"listed twice: {dup}")
        return v


class TransferSection(_Strict):
    sources: list[str] = Field(min_length=1, description="the sites a model is trained at")
    target: str | list[str] = Field(description="the site (or list of sites) to transfer to, each in turn")
    labeled_target: list[int] = Field(default_factory=lambda: [0, 10, 20, 40],
                                      description="label budgets n_t: labelled target rows drawn from the pool")
    seeds: int = Field(default=20, ge=1, le=1000, description="random pool/test splits (and label draws) per target")
    test_fraction: float = Field(default=0.5, gt=0, lt=1, description="share of the target held out for testing")
    methods: list[str] | None = Field(default=None, description="method names (`healthtransfer methods`); "
                                      "default: the baselines")

    @field_validator("labeled_target")
    @classmethod
    def _budgets(cls, v):
        if any(n < 0 for n in v):
            raise ValueError("label budgets must be >= 0")
        return sorted(set(v))

    @model_validator(mode="after")
    def _target_not_source(self):
        targets = [self.target] if isinstance(self.target, str) else self.target
        both = [t for t in targets if t in self.sources]
        if both:
            raise ValueError(f"{both} listed both as target and as source; fix: remove the target from `sources` "
                             "or choose another `target`")
        if not targets:
            raise ValueError("name at least one target site; fix: set `target = \"site\"`")
        return self


class SelectionSection(_Strict):
    """How to choose among candidates without the target's test labels."""

    enabled: bool = Field(default=True, description="choose a model without test labels; false: report only")
    grid: bool = Field(default=False, description="also try each method's small hyper-parameter grid")
    margin: float = Field(default=1.0, ge=0, description="standard errors a method must beat the best baseline by")
    min_gain: float = Field(default=0.01, ge=0, description="and the AUROC it must beat it by")
    calibrate: bool = Field(default=True, description="recalibrate the chosen model before testing")
    folds_target: int = Field(default=5, ge=2, le=20, description="cross-validation folds on labelled target rows")
    folds_source: int = Field(default=3, ge=2, le=20, description="folds on source rows (IWCV / DEV, at n_t = 0)")
    min_per_class: int = Field(default=5, ge=2, description="fewest labelled target rows of a class for target CV "
                               "to override the label-free choice")
    diagnose: bool = Field(default=True, description="run shift diagnostics per target")


class PrivacySection(_Strict):
    """[federated.privacy]: differential privacy for a federated run."""

    mode: str = Field(default="none", pattern="^(none|dp-sgd|client-clipping)$",
                      description="none, dp-sgd (Opacus, per record) or client-clipping (Flower, per site)")
    epsilon: float = Field(default=10.0, gt=0, description="privacy budget per site (smaller: more private)")
    delta: float = Field(default=1e-5, gt=0, lt=1, description="DP failure probability")
    max_grad_norm: float = Field(default=1.0, gt=0, description="per-example clip (dp-sgd)")
    clipping_norm: float = Field(default=1.0, gt=0, description="per-update clip (client-clipping)")
    noise_multiplier: float | None = Field(default=None, ge=0, description="client-clipping noise; default from epsilon")
    stats_epsilon: float = Field(default=1.0, gt=0, description="epsilon of the preprocessing "
                                 "statistics (Gaussian mechanism) in a private run")


class FederatedSection(_Strict):
    """[federated]: training across sites with Flower, each site keeping its rows."""

    sites: list[str] | None = Field(default=None, description="sites taking part; default: every site in the data")
    target: str | None = Field(default=None, description="site to personalise to / adapt to")
    target_labels: bool = Field(default=True, description="false: the target takes no part in training "
                                "(domain adaptation)")
    rounds: int = Field(default=20, ge=1, le=10000, description="federated rounds")
    strategy: str = Field(default="fedavg", pattern="^(fedavg|fedprox)$", description="aggregation strategy")
    proximal_mu: float = Field(default=0.1, ge=0, description="FedProx proximal term")
    model: str = Field(default="logreg", pattern="^(logreg|mlp)$", description="logistic regression or a small MLP")
    hidden: int = Field(default=32, ge=1, description="hidden units of the MLP")
    local_epochs: int = Field(default=2, ge=1, description="epochs at each site per round")
    batch_size: int = Field(default=16, ge=1, description="local minibatch size")
    learning_rate: float = Field(default=0.05, gt=0, description="local SGD learning rate")
    personalise: str = Field(default="none", pattern="^(none|finetune|coral)$",
                             description="after federated training: local fine-tuning, or CORAL towards the target")
    finetune_epochs: int = Field(default=10, ge=0, description="local fine-tuning epochs")
    finetune_lr: float = Field(default=0.01, gt=0, description="local fine-tuning learning rate")
    finetune_anchor: float = Field(default=0.0, ge=0, description="L2-SP pull towards the federated weights")
    test_fraction: float = Field(default=0.34, gt=0, lt=1, description="share of each site's rows held out for testing")
    min_fit_clients: int = Field(default=2, ge=1, description="a round goes on when this many valid updates arrive")
    round_timeout: float = Field(default=120.0, gt=0, description="seconds a round waits for clients")
    secagg: bool = Field(default=False, description="Flower SecAgg+: the server sees only masked updates")
    secagg_shares: int = Field(default=3, ge=2, description="SecAgg+ shares per client")
    secagg_threshold: int = Field(default=2, ge=1, description="SecAgg+ shares needed to reconstruct")
    seed: int = Field(default=0, description="random seed")
    privacy: PrivacySection = Field(default_factory=PrivacySection, description="the [federated.privacy] table")


class Study(_Strict):
    study: StudyInfo
    data: DataSection
    transfer: TransferSection
    selection: SelectionSection = Field(default_factory=SelectionSection)
    federated: FederatedSection | None = None
    base_dir: Path = Field(default=Path("."), exclude=True)

    def resolve(self, p: Path | None) -> Path | None:
        if p is None:
            return None
        p = Path(p).expanduser()
        return p if p.is_absolute() else (self.base_dir / p).resolve()


def _allowed_keys(section: str) -> list[str]:
    model = {"": Study, "study": StudyInfo, "data": DataSection, "transfer": TransferSection}.get(section)
    if model is None:
        return []
    return [f.alias or name for name, f in model.model_fields.items() if name != "base_dir"]


def _explain(err: ValidationError, source: str) -> str:
    """All validation errors as one paragraph: each names its key, what is wrong and the fix."""
    import difflib

    items = []
    for e in err.errors():
        names = [str(p) for p in e["loc"] if not isinstance(p, int)]
        key = ".".join(names) or "(top level)"
        last = names[-1] if names else ""
        fix = _FIX.get(last)
        if e["type"] == "extra_forbidden":
            section = ".".join(names[:-1])
            allowed = _allowed_keys(section)
            close = difflib.get_close_matches(last, allowed, n=1)
            msg = "unknown key"
            where = f"[{section}]" if section else "the top level"
            fix = (f"did you mean `{close[0]}`? " if close else "") + f"{where} accepts {', '.join(allowed)}"
        elif e["type"] == "missing":
            msg = "required key is missing"
        else:
            msg = e["msg"].removeprefix("Value error, ")
            if "; fix: " in msg:
                msg, fix = msg.split("; fix: ", 1)
        fix = fix or "see examples/heart_cleveland_to_va.toml for a complete study file"
        items.append(f"[{key}] {msg} (fix: {fix})")
    return f"{source} is not a valid study file: " + "; ".join(items) + "."


def load_study(path: str | Path) -> Study:
    """Read and validate a study TOML; relative paths in it resolve against its folder."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise UserInputError(f"cannot read the study file ({exc.strerror})", where=str(path),
                             fix="check the path") from None
    except UnicodeDecodeError:
        raise UserInputError("the study file is not UTF-8 text", where=str(path),
                             fix="save it as UTF-8") from None
    text = text.lstrip("\ufeff")  # editors on Windows save UTF-8 with a byte-order mark
    if not text.strip():
        raise UserInputError("the study file is empty", where=str(path),
                             fix="give [study] name, [data] path, domain and label, and [transfer] sources and target; "
                             "start from examples/heart_cleveland_to_va.toml")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserInputError(f"is not valid TOML ({exc})", where=str(path),
                             fix="check quotes, brackets and `key = value` lines") from None
    try:
        study = Study.model_validate(raw)
    except ValidationError as exc:
        raise UserInputError(_explain(exc, str(path))) from None
    study.base_dir = path.resolve().parent
    return study

# The demo's methods: the baselines plus fast members of all four families (the deep ones take
# seconds per fit, times the selection folds; `healthtransfer run` runs them by name).
DEMO_METHODS = [
    *BASELINE_METHODS,
    "iw_domain_lr", "label_shift_em_lr",                        # instance
    "coral_lr", "domain_std_lr", "feat_aug_lr",                 # feature
    "linear_prior", "stacking_lr", "recalibration_lr",          # model
    "relation_imputation_lr",                                   # relation (graph_label_propagation
    # is left out: its fitted neighbour index holds training rows, which a bundle must not carry)
]
