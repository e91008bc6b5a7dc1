"""Issue 15: the report's subgroup levels never print one patient's value (no min/max)."""

import numpy as np
import pandas as pd

from healthtransfer.study.final import subgroup_table


def test_numeric_subgroup_levels_do_not_show_the_extremes():
    rng = np.random.default_rng(0)
    age = np.round(rng.uniform(20, 90, 200), 3)
    y = (rng.random(200) < 1 / (1 + np.exp(-(age - 55) / 10))).astype(int)
    p = np.clip(y * 0.3 + rng.random(200) * 0.7, 0, 1)
    preds = [{"method": "selected", "target": "va", "n_labeled": 20, "y": y, "proba": p,
              "subgroups": pd.DataFrame({"age": age})}]
    levels = " ".join(subgroup_table(preds, ["age"], ["age"])["level"])
    assert levels.count("inf") == 2
    for v in (age.min(), age.max()):
        assert f"{v:g}" not in levels and str(v) not in levels
