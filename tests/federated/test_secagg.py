"""SecAgg+: the server only ever sees masked vectors, and their unmasked sum is the aggregate."""

import numpy as np

from healthtransfer.federated._run import simulate

from .conftest import make_cfg


def test_server_sees_only_masked_updates(heart):
    from flwr.common import bytes_to_ndarray
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
    from flwr.common.secure_aggregation.secaggplus_constants import Key
    from flwr.server.workflow import SecAggPlusWorkflow
    from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
    from flwr.server.workflow.constant import Key as WKey

    spec, sites, frames = heart
    seen_masked: dict[int, list] = {}
    aggregates: dict[int, list] = {}
    raw: dict[int, dict] = {}

    class Recording(SecAggPlusWorkflow):
        def collect_masked_vectors_stage(self, grid, context, state):
            rnd = int(context.state.config_records[MAIN_CONFIGS_RECORD][WKey.CURRENT_ROUND])
            send = grid.send_and_receive

            def spy(msgs, *a, **k):
                replies = list(send(msgs, *a, **k))
                for m in replies:
                    if not m.has_error():
                        # everything the server receives from this client this stage
                        assert not m.content.array_records or all(len(r) == 0 for r in m.content.array_records.values())
                        vec = [bytes_to_ndarray(b) for b in m.content.config_records[RECORD_KEY_CONFIGS][Key.MASKED_PARAMETERS]]
                        seen_masked.setdefault(rnd, []).append(vec)
                return replies

            grid.send_and_receive = spy
            try:
                return super().collect_masked_vectors_stage(grid, context, state)
            finally:
                grid.send_and_receive = send

        def unmask_stage(self, grid, context, state):
            ok = super().unmask_stage(grid, context, state)
            rnd = int(context.state.config_records[MAIN_CONFIGS_RECORD][WKey.CURRENT_ROUND])
            aggregates[rnd] = context.state.array_records[MAIN_PARAMS_RECORD].to_numpy_ndarrays()
            return ok

    def hook(client):
        fit = client.fit

        def recording_fit(parameters, config):
            w, n, m = fit(parameters, config)
            raw.setdefault(int(config["server_round"]), {})[client.site] = ([np.array(a) for a in w], n)
            return w, n, m

        client.fit = recording_fit

    cfg = make_cfg(rounds=2, secagg=True, finetune_epochs=0)
    r = simulate(cfg, spec, sites, frames, client_hook=hook,
                 fit_workflow_factory=lambda: Recording(num_shares=3, reconstruction_threshold=2))
    assert r["per_site"] and set(seen_masked) == {1, 2}
    for rnd in (1, 2):
        assert len(seen_masked[rnd]) == 4 and len(raw[rnd]) == 4
        for vec in seen_masked[rnd]:
            flat = np.concatenate([np.ravel(v).astype(float) for v in vec])
            for site, (w, _) in raw[rnd].items():
                mine = np.concatenate([np.ravel(a) for a in w]).astype(float)
                # a masked vector is no client's update, nor a scaled copy of it
                assert flat.shape[0] >= mine.shape[0]
                assert not np.allclose(flat[: mine.shape[0]], mine, atol=1e-2)
                assert abs(np.corrcoef(flat[-mine.shape[0]:], mine)[0, 1]) < 0.9
        # ... while the unmasked sum is the example-weighted mean of the raw updates
        tot = sum(n for _, n in raw[rnd].values())
        expected = [sum(w[i] * n / tot for w, n in raw[rnd].values()) for i in range(len(aggregates[rnd]))]
        for a, e in zip(aggregates[rnd], expected):
            assert np.allclose(a, e, atol=5e-3)
