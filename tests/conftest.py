"""Test-wide settings.

Tests run single-threaded inside each pytest-xdist worker: on tables of a few hundred rows,
OpenMP/BLAS thread pools fighting over two cores made fits 10-100x slower.
"""

import os
import sys
from pathlib import Path

# Helpers the tests share (``_bundles``: a small UCI heart bundle) live in tests/, not in the
# package; make them importable whatever pytest's import mode.
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.append(str(Path(__file__).resolve().parent))

# The staged datasets that are not bundled: $HEALTHTRANSFER_DATA, else ../shared/data beside the
# repository (never a machine path). Tests read them through this variable.
os.environ.setdefault("HEALTHTRANSFER_DATA", str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _single_threaded():
    with threadpool_limits(1):
        yield
