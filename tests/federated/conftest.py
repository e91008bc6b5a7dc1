import pytest

from healthtransfer.data.sources import HEART_FEATURES as FEATURES

pytest.importorskip("flwr")

SITES = ["cleveland", "hungarian", "switzerland", "va"]


@pytest.fixture(scope="session")
def heart():
    """(spec, sites, frames) for the four UCI heart hospitals, split per site."""
    from healthtransfer.data import load_dataset
    from healthtransfer.federated._run import site_frames

    ds = load_dataset("uci_heart").with_features(FEATURES)
    from healthtransfer.federated._preprocess import stats_bounds

    spec = {"label": ds.label, "numeric": ds.numeric, "categorical": ds.categorical,
            **stats_bounds(ds.schema, ds.numeric, ds.categorical)}
    return spec, SITES, site_frames(ds.frame, ds.domain, ds.label, SITES, 0.34, 0)


def make_cfg(**kw):
    from healthtransfer.study.config import FederatedSection

    base = dict(rounds=3, local_epochs=2, learning_rate=0.1, finetune_epochs=5)
    base.update(kw)
    return FederatedSection.model_validate(base).model_dump()
