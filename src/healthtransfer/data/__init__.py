"""Data integration: sources, per-site schemas, harmonisation, splits and preprocessing."""

from .dataset import Dataset, fingerprint
from .harmonise import HarmonisationReport, harmonise
from .schema import DatasetSchema, FeatureSpec, SiteSpec, load_schema
from .sources import BUILTIN, builtin_schema, load_dataset, load_table, read_table

__all__ = [
    "BUILTIN",
    "Dataset",
    "DatasetSchema",
    "FeatureSpec",
    "HarmonisationReport",
    "SiteSpec",
    "builtin_schema",
    "fingerprint",
    "harmonise",
    "load_dataset",
    "load_schema",
    "load_table",
    "read_table",
]
