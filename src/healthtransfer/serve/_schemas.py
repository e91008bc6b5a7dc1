"""Request models generated from a bundle's input schema (pydantic, ``extra="forbid"``).

Numeric features: a JSON number (strict: no strings, no booleans), finite, within the
schema's physiological ``range`` (the hard limit; outside it -> 422). Categorical and binary
features: one of the schema's categories. Every feature may be omitted or null (missing;
the prediction is then flagged), except an input the schema marks ``"required": true`` (an
existing score the model recalibrates): without it -> 422. Unknown fields -> 422.

Example
-------
>>> schema = {"features": [{"name": "age", "kind": "numeric", "unit": "years",
...                         "range": [18, 100]},
...                        {"name": "cp", "kind": "categorical", "categories": [1, 2]}]}
>>> Record = record_model(schema)
>>> Record.model_validate({"age": 50, "cp": 2}).model_dump(by_alias=True)
{'age': 50.0, 'cp': 2}
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model, model_validator

__all__ = ["record_model", "request_models", "expected_for", "safe_errors"]


def _no_bool(v):
    # JSON true/false would otherwise match the codes 1/0
    if isinstance(v, bool):
        raise ValueError("wrong type: expected a category code, not true/false")
    return v


def _field(spec: dict, i: int):
    desc = spec.get("description") or ""
    unit = spec.get("unit")
    title = spec["name"] + (f" ({unit})" if unit else "")
    if spec["kind"] == "numeric":
        rng = spec.get("range")
        kw: dict[str, Any] = {"strict": True, "allow_inf_nan": False}
        if rng is not None:
            kw.update(ge=rng[0], le=rng[1])
        typ = Annotated[float, Field(**kw)]
    else:
        cats = tuple(spec.get("categories") or (0, 1))
        typ = Annotated[Literal[cats], BeforeValidator(_no_bool)]  # type: ignore[valid-type]
    if spec.get("required"):  # e.g. the reference score a recalibration model cannot do without
        return (typ, Field(alias=spec["name"], title=title, description=desc or None))
    return (typ | None, Field(default=None, alias=spec["name"], title=title,
                              description=desc or None))


def record_model(schema: dict) -> type[BaseModel]:
    fields = {f"f{i}": _field(spec, i) for i, spec in enumerate(schema["features"])}
    return create_model("Record", __config__=ConfigDict(extra="forbid", populate_by_name=False),
                        **fields)


def request_models(schema: dict, max_batch: int):
    Record = record_model(schema)

    class PredictRequest(BaseModel):
        """Either one ``record`` or a batch of ``records`` (at most ``max_batch``)."""

        model_config = ConfigDict(extra="forbid")
        record: Record | None = None  # type: ignore[valid-type]
        records: Annotated[list[Record], Field(min_length=1, max_length=max_batch)] | None = None  # type: ignore[valid-type]

        @model_validator(mode="after")
        def _one(self):
            if (self.record is None) == (self.records is None):
                raise ValueError("give exactly one of `record` (one patient) or `records` "
                                 "(a batch)")
            return self

        def items(self) -> list[dict]:
            recs = [self.record] if self.record is not None else list(self.records)
            return [r.model_dump(by_alias=True) for r in recs]

    class ExplainRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        record: Record  # type: ignore[valid-type]

    return Record, PredictRequest, ExplainRequest


_MESSAGES = {
    "extra_forbidden": "unknown field",
    "missing": "required field is missing",
    "float_type": "wrong type",
    "float_parsing": "wrong type",
    "finite_number": "must be a finite number",
    "greater_than_equal": "out of the allowed range",
    "less_than_equal": "out of the allowed range",
    "literal_error": "not one of the allowed categories",
    "too_long": "batch too large",
    "too_short": "batch is empty",
    "list_type": "wrong type",
    "model_type": "wrong type",
    "model_attributes_type": "wrong type",
    "dict_type": "wrong type",
    "json_invalid": "body is not valid JSON",
    "value_error": None,
}


def expected_for(err: dict, schema_by_name: dict, max_batch: int) -> Any:
    """What the field expects, from the schema (never from the input)."""
    typ = err.get("type", "")
    ctx = err.get("ctx") or {}
    field = next((p for p in reversed(err.get("loc", ())) if isinstance(p, str)
                  and p in schema_by_name), None)
    spec = schema_by_name.get(field) if field else None
    if typ == "extra_forbidden":
        return "one of: record, records" if field is None and not any(
            p in ("record", "records") for p in err.get("loc", ())[:-1]) else \
            f"a field of the schema ({', '.join(schema_by_name)})"
    if typ in ("too_long", "too_short"):
        return f"between 1 and {max_batch} records"
    if spec is not None:
        unit = f" {spec['unit']}" if spec.get("unit") else ""
        if spec["kind"] == "numeric":
            rng = spec.get("range")
            null = " (required)" if spec.get("required") else ", or null"
            if rng is not None:
                return f"a number from {rng[0]:g} to {rng[1]:g}{unit}{null}"
            return f"a number{unit}{null}"
        return f"one of {spec.get('categories')}, or null"
    if typ in ("model_type", "model_attributes_type", "dict_type"):
        return "a JSON object"
    if typ == "list_type":
        return "a JSON array of records"
    if typ == "json_invalid":
        return "a JSON body"
    if "expected" in ctx:
        return str(ctx["expected"])
    return None


def safe_errors(errors, schema_by_name: dict, max_batch: int) -> list[dict]:
    """pydantic/FastAPI errors without the ``input`` (patient values) or free text that may
    contain it."""
    out = []
    for e in errors:
        typ = str(e.get("type", ""))
        msg = _MESSAGES.get(typ)
        if msg is None:
            raw = str(e.get("msg", "invalid value"))
            inp = e.get("input")
            if typ == "value_error":
                msg = raw.removeprefix("Value error, ")
            elif inp is None or (str(inp) not in raw and repr(inp) not in raw):
                msg = raw
            else:
                msg = "invalid value"
        out.append({"loc": [p if isinstance(p, (str, int)) else str(p) for p in e.get("loc", ())],
                    "type": typ, "msg": msg,
                    "expected": expected_for(e, schema_by_name, max_batch)})
    return out
