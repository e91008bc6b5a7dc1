"""Out-of-core statistics for Parquet datasets larger than memory.

Every function reads the dataset in record batches (pyarrow,
``batch_rows`` rows at a time), so memory is bounded by the batch size plus small per-site
accumulators, whatever the size of the data:

- :func:`iter_batches` - the batches as pandas frames;
- :func:`streaming_site_counts` - rows per site, reading the domain column only;
- :func:`streaming_harmonisation_report` - the :class:`~healthtransfer.data.harmonise.HarmonisationReport`
  that :func:`~healthtransfer.data.harmonise.harmonise` would give on the whole table (each
  batch is harmonised and the per-site, per-column counts are summed);
- :func:`streaming_feature_stats` - per site and feature: rows, missing, mean, variance
  (Chan et al. merge), min/max and a reservoir sample (for quantiles);
- :func:`streaming_shift_summary` - shift diagnostics of a target site against source sites:
  SMD and missingness per feature, a domain classifier trained by SGD ``partial_fit`` on the
  batches with a held-out AUROC, and the Gaussian-kernel MMD test on reservoir samples.

The code lives by concern: reading (``_reading``), batch harmonisation with the same rules as
:func:`~healthtransfer.data.harmonise.harmonise` (``_batches``, ``_rules``), statistics
(``_stream_stats``) and the shift tests (``_stream_shift``); this module is their public face.

Example
-------
>>> import pandas as pd, tempfile, os
>>> from healthtransfer.data.schema import DatasetSchema
>>> schema = DatasetSchema.model_validate({"name": "toy", "label": "y", "domain": "site",
...     "features": [{"name": "chol", "range": [50, 700]}]})
>>> path = os.path.join(tempfile.mkdtemp(), "t.parquet")
>>> pd.DataFrame({"site": ["a", "a", "b"], "chol": [0, 250, 900], "y": [0, 1, 1]}).to_parquet(path)
>>> rep = streaming_harmonisation_report(path, schema, batch_rows=2)
>>> rep.rows[["site", "n_rows", "n_out_of_range"]].values.tolist()
[['a', 2, 1], ['b', 1, 1]]
"""

from __future__ import annotations

from ._batches import _harmonise_arrow, _harmonise_batch, _harmonise_pandas, _records, streaming_harmonisation_report
from ._reading import _dataset, iter_batches, streaming_site_counts
from ._stream_shift import streaming_shift_summary
from ._stream_stats import FeatureStats, streaming_feature_stats

__all__ = [
    "iter_batches",
    "streaming_harmonisation_report",
    "streaming_feature_stats",
    "streaming_shift_summary",
    "streaming_site_counts",
    "FeatureStats",
]
# private names kept importable for the CLI and the tests that check the batch path
_PRIVATE = (_dataset, _harmonise_arrow, _harmonise_batch, _harmonise_pandas, _records)
