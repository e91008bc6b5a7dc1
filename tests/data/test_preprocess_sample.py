"""Above max_rows the preprocessor is fitted on a sample that keeps every category."""

import numpy as np
import pandas as pd

from healthtransfer.data.preprocess import fit_preprocessor, make_preprocessor


def test_sampled_fit_keeps_rare_categories_and_matches_a_full_fit():
    rng = np.random.default_rng(0)
    n = 5000
    df = pd.DataFrame({"age": rng.normal(60, 10, n), "cp": rng.choice([1.0, 2.0, 3.0], n)})
    df.loc[rng.random(n) < 0.1, "age"] = np.nan
    df.loc[4321, "cp"] = 4.0  # one row only
    full = make_preprocessor(["age"], ["cp"]).fit(df)
    part = fit_preprocessor(["age"], ["cp"], df, max_rows=500)
    assert part.transform(df).shape == full.transform(df).shape
    assert part.transform(df.loc[[4321]])[0, -1] == 1.0  # the rare category has its column
    a, b = part.transform(df), full.transform(df)
    assert np.allclose(a[:, 0], b[:, 0], atol=0.15)  # standardised age: sample vs all rows
    assert np.array_equal(fit_preprocessor(["age"], ["cp"], df).transform(df), b)
