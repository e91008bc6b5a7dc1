"""Federated training and federated transfer across sites, on Flower.

Each site (hospital) is a Flower client holding only its own harmonised rows; the study file's
``[federated]`` table says which sites, how many rounds, which strategy (FedAvg, FedProx), which
model (logistic regression or a small MLP), the local epochs, personalisation and privacy.

What leaves each site
---------------------
* Preprocessing: per numeric feature the count of observed values, their sum and their sum of
  squares; per categorical feature the set of levels seen; the number of training rows. Never
  a row. The server adds these up and sends the merged statistics back.
* Training: the locally updated model parameters and the number of training rows, once per
  round. With ``secagg = true`` (Flower's SecAgg+) the server only receives masked vectors and
  can only reconstruct their (weighted) sum; with ``privacy.mode = "dp-sgd"`` (Opacus) those
  parameters are differentially private per record, and each site reports its spent epsilon;
  with ``"client-clipping"`` (Flower's ``DifferentialPrivacyClientSideFixedClipping``) the
  update is clipped at the site and the server adds noise to the sum (site-level DP).
* Evaluation: metrics only (test-row count, AUROC, accuracy) of the global model and, with
  ``personalise = "finetune"``, of the model fine-tuned locally. Fine-tuned weights stay at
  the site.
* Domain adaptation (``personalise = "coral"``, ``target_labels = false``): the unlabelled
  target shares the mean vector and covariance matrix of its preprocessed features (aggregate
  feature statistics), never rows or labels, and takes no part in training; source sites
  re-colour their rows with those moments (CORAL) before each local update.

Run it
------
``healthtransfer federate STUDY.toml --simulate`` (Flower simulation runtime on one machine), or
:func:`federate` from Python.

Real deployment on loopback
---------------------------
``scripts/federated_loopback.sh STUDY.toml [OUT.json]`` (the same as
``healthtransfer federate STUDY.toml --deploy`` and ``federate(study, simulate=False)``) runs
the study as a Flower deployment on this machine, every part a separate process bound to
127.0.0.1 on free ports (Flower 1.42, ``--insecure``: plain HTTP, loopback only):

* ``flower-superlink --insecure --host 127.0.0.1 --port P --disable-runtime-dependency-installation``
  - the SuperLink. One HTTP port serves the Fleet API (SuperNodes pull/push messages), the
  Control API (``flwr run`` submits the run, streams its log) and the Runtime API. It starts
  ``flower-superexec``, which starts a ``flwr-serverapp`` process for the run; that runs our
  ServerApp (``healthtransfer.federated._apps:server_app``): federated statistics, the training
  rounds, the final evaluation; it writes the report to ``result.json`` and one line per round
  to ``progress.jsonl`` in the work folder.
* one ``flower-supernode --insecure --superlink 127.0.0.1:P --port Q --node-config
  "site='cleveland' data='.../sites/cleveland'"`` per site - a hospital. Its own
  ``flower-superexec`` starts a ``flwr-clientapp`` process per message, which runs our ClientApp
  (``healthtransfer.federated._apps:client_app``) on that site's rows only (the ``data`` file
  written for that node; a real site would instead give ``study=...`` pointing at its own data).
* ``flwr run APP_DIR loopback --stream`` - with ``FLWR_HOME`` set to the work folder, whose
  ``config.toml`` names the SuperLink connection ``loopback`` (``127.0.0.1:P``, insecure).
  ``APP_DIR`` is a generated Flower App: a ``pyproject.toml`` naming the two components above
  and carrying the run config (the ``[federated]`` plan, the study path, the result path).

:func:`federate` waits for the result (``timeout``), then stops every process it started
(process groups, SuperNodes first, then the SuperLink, then any leftover descendants). With
``workdir=`` the logs (``superlink.log``, ``supernode-SITE.log``, ``flwr-run.log`` = the run
log), the app and the result stay there. ``rejoin={"va": 1}`` restarts va's SuperNode after
round 1: the new node registers under a new node id, the server maps it back to its site and
logs ``site 'va' rejoined as node ...`` in the run log and the report's ``events``.
"""

from __future__ import annotations

from pathlib import Path

from ._preprocess import FederatedPreprocessor, local_stats, merge_stats
from ._validate import check_update, split_valid, weighted_average

__all__ = [
    "FederatedPreprocessor",
    "check_update",
    "federate",
    "local_stats",
    "merge_stats",
    "split_valid",
    "weighted_average",
]


def federate(study_path_or_study, *, simulate: bool = True, out: str | Path | None = None, **kw) -> dict:
    """Run the study's ``[federated]`` job and return its report (per-site AUROC/accuracy,
    per-round log of dropped/rejected clients, spent epsilon). ``out``: also write it as JSON.

    ``simulate=True``: Flower's simulation runtime in this process (keywords go to
    :func:`._run.simulate`). ``simulate=False``: a real deployment on loopback - a SuperLink and
    one SuperNode per site as separate processes, the run submitted with ``flwr run``; keywords
    go to :func:`._deploy.deploy`: ``timeout`` (seconds, default 600), ``workdir`` (keep the
    logs, app and result there), ``echo`` (stream the run log to stderr), ``rejoin``
    ({site: round}: restart that site's SuperNode after that round)."""
    from ..errors import UserInputError
    from ..study.config import Study, load_study
    from ._run import plan_from_study, simulate as _simulate, write_result

    is_study = isinstance(study_path_or_study, Study)
    study = study_path_or_study if is_study else load_study(study_path_or_study)
    cfg, spec, sites, frames = plan_from_study(study)
    if simulate:
        result = _simulate(cfg, spec, sites, frames, **kw)
    else:
        from ._deploy import deploy, flower_executable

        missing = [e for e in ("flower-superlink", "flower-supernode", "flwr") if flower_executable(e) is None]
        if missing:
            raise UserInputError(f"deployment mode needs the Flower commands {missing}", where="federate",
                                 fix="pip install 'flwr>=1.42', or run with --simulate")
        result = deploy(cfg, spec, sites, None if is_study else study_path_or_study, frames=frames, **kw)
    write_result(result, out)
    return result
