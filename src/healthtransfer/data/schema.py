"""Per-site schemas as data: what each harmonised column is, and how each site writes it.

A schema is a TOML file (see ``healthtransfer/data/schemas/*.toml``) validated by
:class:`DatasetSchema`. It declares each feature once (kind, unit, allowed range, categories)
and, per site, how the raw export differs: column names, sentinel missing values, units to
convert, category codes to map. ``"*"`` under ``[sites]`` applies to every site.

Example
-------
>>> schema = DatasetSchema.model_validate({
...     "name": "toy", "label": "y", "domain": "site",
...     "features": [{"name": "chol", "kind": "numeric", "unit": "mg/dL", "range": [50, 700]}],
...     "sites": {"*": {"missing_values": {"chol": [0]}}},
... })
>>> schema.site("any").missing_values
{'chol': [0]}
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import UserInputError

__all__ = [
    "DatasetSchema",
    "FeatureSpec",
    "SiteSpec",
    "UnitConversion",
    "load_schema",
    "format_validation_error",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FhirUnit(_Strict):
    """A UCUM unit a FHIR ``Quantity`` may carry: ``feature value = value * factor + offset``."""

    factor: float = Field(default=1.0, description="multiply the FHIR value by this")
    offset: float = Field(default=0.0, description="then add this (e.g. for temperature scales)")


class FhirCode(_Strict):
    """Where a feature lives in FHIR R4 (read by the service's FHIR and CDS Hooks endpoints).

    ``resource = "Observation"``: the latest Observation with ``system|code``; its
    ``valueQuantity`` in ``unit`` (UCUM) or in one of ``units`` (converted), its
    ``valueInteger``/``valueBoolean``, or its ``valueCodeableConcept`` looked up in ``values``;
    with ``above`` set, the feature is 1 when the quantity exceeds it, else 0 (e.g. fasting
    glucose > 120 mg/dL). ``resource = "Condition"``: 1 when an active Condition with the code
    is present, else 0. ``resource = "Patient"``: ``element = "age"`` (whole years from
    ``birthDate``) or ``"gender"`` (looked up in ``values``). ``required``: a Bundle without it
    is refused, naming the code; otherwise the feature is missing (imputed and flagged).
    """

    resource: Literal["Observation", "Condition", "Patient"] = Field(
        default="Observation", description="the FHIR resource the value is read from")
    system: str = Field(default="http://loinc.org", description="code system URI (LOINC, SNOMED CT or a local one)")
    code: str | None = Field(default=None, description="the code within `system` (Observation / Condition)")
    display: str = Field(default="", description="human-readable name of the code, shown in prefetch and errors")
    element: Literal["age", "gender"] | None = Field(
        default=None, description="for resource = \"Patient\": which element (age from birthDate, or gender)")
    unit: str | None = Field(default=None, description="UCUM code of the feature's unit")
    units: dict[str, FhirUnit] = Field(default_factory=dict, description="other accepted UCUM units and their conversion")
    values: dict[str, Any] = Field(default_factory=dict, description="coded answer -> feature value")
    above: float | None = Field(default=None, description="turn a quantity into 1/0: 1 when it exceeds this")
    required: bool = Field(default=False, description="a FHIR Bundle without this feature is refused, naming the code")

    @model_validator(mode="after")
    def _complete(self):
        if self.resource == "Patient" and self.element is None:
            raise ValueError("a Patient code map needs element = 'age' or 'gender'")
        if self.resource != "Patient" and not self.code:
            raise ValueError(f"a {self.resource} code map needs a code (e.g. a LOINC or "
                             "SNOMED CT code)")
        return self


class FeatureSpec(_Strict):
    """One harmonised column."""

    name: str = Field(description="the harmonised column name")
    kind: Literal["numeric", "categorical", "binary"] = Field(default="numeric", description="how the column is modelled")
    unit: str | None = Field(default=None, description="the harmonised unit (documentation; convert per site)")
    range: tuple[float, float] | None = Field(
        default=None, description="allowed physiological range; values outside become missing"
    )
    categories: list[Any] | None = Field(default=None, description="allowed levels; others are counted as unmapped")
    description: str = Field(default="", description="what the column means, shown in the bundle's schema")
    fhir: FhirCode | None = Field(default=None, description="FHIR code (LOINC / SNOMED CT / local) and UCUM units that map an Observation onto this column")

    @field_validator("range")
    @classmethod
    def _ordered(cls, v):
        if v is not None and v[0] > v[1]:
            raise ValueError(f"range must be [low, high] with low <= high, got {list(v)}")
        return v


class UnitConversion(_Strict):
    """``harmonised = raw * factor + offset``; ``from_unit`` documents what the site writes."""

    from_unit: str = Field(description="the unit the site writes, e.g. mmol/L")
    factor: float = Field(default=1.0, description="multiplier to the harmonised unit")
    offset: float = Field(default=0.0, description="added after the multiplication (e.g. temperatures)")


class SiteSpec(_Strict):
    """How one site's export differs from the harmonised table."""

    rename: dict[str, str] = Field(default_factory=dict, description="raw name -> harmonised name")
    missing_values: dict[str, list[Any]] = Field(
        default_factory=dict, description="column -> sentinel values meaning 'not measured'"
    )
    units: dict[str, UnitConversion] = Field(default_factory=dict, description="column -> unit conversion")
    code_maps: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="column -> raw code (as text) -> harmonised value"
    )

    def merged(self, other: "SiteSpec") -> "SiteSpec":
        """This spec with ``other``'s entries taking precedence."""
        out = self.model_copy(deep=True)
        out.rename.update(other.rename)
        for col, vals in other.missing_values.items():
            out.missing_values[col] = list(dict.fromkeys([*out.missing_values.get(col, []), *vals]))
        out.units.update(other.units)
        for col, m in other.code_maps.items():
            out.code_maps.setdefault(col, {}).update(m)
        return out


class DatasetSchema(_Strict):
    """A harmonised dataset: its label, domain column, features and per-site rules."""

    name: str = Field(description="the dataset's name")
    label: str = Field(description="outcome column")
    domain: str = Field(description="column naming each row's site")
    positive: Any | None = Field(default=None, description="positive class of a binary label")
    group: str | None = Field(default=None, description="patient id column (splits keep a patient on one side)")
    reference_score: str | None = Field(default=None, description="an existing risk score's column (a probability)")
    features: list[FeatureSpec] = Field(description="the [[features]] tables, one per harmonised column")
    sites: dict[str, SiteSpec] = Field(default_factory=dict, description="per-site rules; \"*\" applies to every site")
    description: str = Field(default="", description="what the data is")
    license: str = Field(default="", description="the data's licence")
    citation: str = Field(default="", description="how to cite the data")

    @model_validator(mode="after")
    def _unique(self):
        names = [f.name for f in self.features]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"features declared twice: {dup}")
        return self

    def feature(self, name: str) -> FeatureSpec | None:
        return next((f for f in self.features if f.name == name), None)

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def categorical(self) -> list[str]:
        return [f.name for f in self.features if f.kind == "categorical"]

    def site(self, site: str) -> SiteSpec:
        """The rules for ``site``: the ``"*"`` defaults merged with the site's own."""
        base = self.sites.get("*", SiteSpec())
        own = self.sites.get(str(site))
        return base.merged(own) if own is not None else base.model_copy(deep=True)


def format_validation_error(err: ValidationError, source: str) -> str:
    """Turn pydantic's error list into 'key: problem' lines without echoing values."""
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check its spelling against the documentation)"
        elif e["type"] == "missing":
            msg = "required key is missing"
        lines.append(f"  - {key}: {msg}")
    return f"{source} is not valid:\n" + "\n".join(lines)


def load_schema(path: str | Path) -> DatasetSchema:
    """Read and validate a schema TOML file."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UserInputError(
            f"cannot read the schema ({type(exc).__name__}: {exc})",
            where=str(path),
            fix="check the path and that it is UTF-8 TOML",
        ) from None
    try:
        return DatasetSchema.model_validate(raw)
    except ValidationError as exc:
        raise UserInputError(
            format_validation_error(exc, f"schema {path}"),
            fix="correct the keys listed above",
        ) from None
