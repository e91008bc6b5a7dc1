"""The base install (no extras) runs a study end to end, bundle included.

Two checks, both in a child process that starts clean:

* the modules of every extra are made unimportable, then a small study runs and writes its
  bundle (a deep method included, so the torch weights path is exercised): a run-path import of
  an extra (the issue that made the README's first command fail) fails this test;
* every third-party module the run imported belongs to a distribution declared in
  ``[project] dependencies`` (or is pulled in by one), so ``pip install healthtransfer`` is enough.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# top-level modules that only the extras bring (serve, onnx, federated, scale, bench, docs)
EXTRA_MODULES = ["fastapi", "uvicorn", "starlette", "httpx", "sqlalchemy", "psycopg", "onnx", "skl2onnx",
                 "onnxruntime", "flwr", "opacus", "ray", "duckdb", "psutil", "lightgbm", "mkdocs", "selenium"]

CHILD = textwrap.dedent('''
    import importlib.abc, json, sys
    BLOCK = set(json.loads(sys.argv[1]))

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCK:
                raise ModuleNotFoundError(f"No module named {name!r} (blocked: an extra)")
            return None

    sys.meta_path.insert(0, Block())
    # as if not installed: a probe (torch probes for onnx) finds nothing, an import fails
    import importlib.util
    _find_spec = importlib.util.find_spec
    importlib.util.find_spec = lambda name, package=None: (
        None if name.split(".")[0] in BLOCK else _find_spec(name, package))
    from healthtransfer.cli import main
    sys.argv = ["healthtransfer", "--debug", "run", sys.argv[2], "--out", sys.argv[3], "--jobs", "1"]
    try:
        main()
    except SystemExit as exc:
        if exc.code:
            raise
    # the third-party modules that healthtransfer's own loaded modules import and that were
    # imported (libraries' opportunistic optional imports, e.g. pandas -> numexpr, are theirs)
    import ast
    loaded = {m.split(".")[0] for m in sys.modules}
    named = set()
    for name, mod in list(sys.modules.items()):
        if name.startswith("healthtransfer") and getattr(mod, "__file__", None):
            for node in ast.walk(ast.parse(open(mod.__file__).read())):
                if isinstance(node, ast.Import):
                    named |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    named.add(node.module.split(".")[0])
    print("IMPORTED " + json.dumps(sorted(named & loaded)))
''')


def _base_distributions() -> set[str]:
    import re

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0].lower().replace("_", "-") for d in deps}


def _requires_closure(names: set[str]) -> set[str]:
    """The declared distributions and everything they require (installed metadata)."""
    import re
    from importlib import metadata

    seen, todo = set(), list(names)
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        try:
            reqs = metadata.requires(n) or []
        except metadata.PackageNotFoundError:
            continue
        for r in reqs:
            if "extra ==" in r:
                continue
            todo.append(re.split(r"[<>=!~\[; (]", r, maxsplit=1)[0].lower().replace("_", "-"))
    return seen


def test_base_install_runs_a_study_and_writes_its_bundle(tmp_path):
    study = tmp_path / "s.toml"
    study.write_text(textwrap.dedent('''
        [study]
        name = "base-install"
        [data]
        dataset = "uci_heart"
        features = ["age", "sex", "cp", "trestbps", "thalach", "oldpeak"]
        [transfer]
        sources = ["cleveland"]
        target = "hungarian"
        labeled_target = [0]
        seeds = 1
        methods = ["source_lr", "coral_lr", "mlp_source"]
        [selection]
        diagnose = false
    '''))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(EXTRA_MODULES), str(study), str(out)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "report.html").is_file() and (out / "results.json").is_file()
    assert list(out.glob("bundle/**/manifest.json")), "the run wrote no bundle"

    from importlib import metadata

    imported = json.loads(proc.stdout.split("IMPORTED ", 1)[1].splitlines()[0])
    owners = metadata.packages_distributions()
    allowed = _requires_closure(_base_distributions() | {"healthtransfer"})
    stdlib = set(sys.stdlib_module_names)
    undeclared = {}
    for mod in imported:
        if mod in stdlib or mod.startswith("_") or mod not in owners:
            continue
        dists = {d.lower().replace("_", "-") for d in owners[mod]}
        if not dists & allowed:
            undeclared[mod] = sorted(dists)
    assert not undeclared, f"the run path imports modules no base dependency provides: {undeclared}"
