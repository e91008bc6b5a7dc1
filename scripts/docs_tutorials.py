"""Run the documentation's tutorials, so that a tutorial that breaks fails CI.

    python scripts/docs_tutorials.py [--workdir DIR] [--api] [PAGE.md ...]

A page takes part when it contains ``<!-- docs-check: run -->``. Its fenced blocks run in order,
in one working folder shared by all pages (pages run in the order of ``mkdocs.yml``'s nav, so
a later tutorial can use what an earlier one wrote, e.g. the demo's bundle):

- a block with a ``title="NAME"`` is a file: it is written to ``NAME``;
- ``bash`` blocks run with ``bash -euo pipefail``; ``python`` blocks run with this Python;
- a block right after ``<!-- docs-check: skip -->`` is shown, not run (installers, servers);
- other languages (``text``, ``json``, ...) are shown only.

``--api`` also runs the generated example of every estimator on the Python API pages.
Exit status 1 names the page, the block's line and its output.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
RUN_MARK = "<!-- docs-check: run -->"
SKIP_MARK = "<!-- docs-check: skip -->"
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>```+|~~~+)\s*(?P<info>[^\n]*)$")


@dataclass
class Block:
    lang: str
    title: str | None
    code: str
    line: int  # 1-based line of the opening fence
    skip: bool


def parse_blocks(text: str) -> list[Block]:
    """The fenced code blocks of a Markdown page, in order.

    >>> [b.lang for b in parse_blocks("```bash\\nls\\n```\\n<!-- docs-check: skip -->\\n```python\\nx\\n```\\n")]
    ['bash', 'python']
    """
    lines = text.splitlines()
    blocks, i, skip_next = [], 0, False
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            if lines[i].strip() == SKIP_MARK:
                skip_next = True
            elif lines[i].strip():
                skip_next = False
            i += 1
            continue
        fence, info, indent = m.group("fence"), m.group("info").strip(), m.group("indent")
        lang = re.match(r"[\w+-]*", info.lstrip("{ .")).group(0)
        title = re.search(r'title="([^"]+)"', info)
        body, j = [], i + 1
        while j < len(lines) and not (lines[j].strip().startswith(fence) and lines[j].strip().strip(fence[0]) == ""):
            body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j])
            j += 1
        if j == len(lines):
            raise ValueError(f"line {i + 1}: code block is never closed")
        blocks.append(Block(lang, title.group(1) if title else None, "\n".join(body) + "\n", i + 1, skip_next))
        skip_next = False
        i = j + 1
    return blocks


def nav_pages() -> list[Path]:
    """Pages in the order of mkdocs.yml's nav (pages not in the nav come last)."""
    order = re.findall(r"([\w/.-]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), flags=re.M)
    pages = [DOCS / p for p in order if (DOCS / p).exists()]
    rest = sorted(p for p in DOCS.rglob("*.md") if p not in pages and "_gen" not in p.parts)
    return pages + rest


def run_block(block: Block, workdir: Path, env: dict) -> tuple[bool, str, float]:
    t0 = time.perf_counter()
    if block.title:
        dest = workdir / block.title
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(block.code)
        return True, f"wrote {block.title}", 0.0
    if block.lang in ("bash", "sh", "shell"):
        cmd = ["bash", "-euo", "pipefail", "-c", block.code]
    elif block.lang in ("python", "py"):
        cmd = [sys.executable, "-c", block.code]
    else:
        return True, "", 0.0
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)
    return proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:], time.perf_counter() - t0


def run_page(page: Path, workdir: Path, env: dict) -> bool:
    rel = page.relative_to(ROOT)
    for b in parse_blocks(page.read_text()):
        if b.skip or (not b.title and b.lang not in ("bash", "sh", "shell", "python", "py")):
            continue
        ok, out, secs = run_block(b, workdir, env)
        print(f"  {rel}:{b.line} {b.title or b.lang} {'ok' if ok else 'FAILED'} ({secs:.1f} s)", flush=True)
        if not ok:
            print(f"\n{rel}:{b.line}: this {b.lang} block failed:\n{b.code}\n--- output ---\n{out}", file=sys.stderr)
            return False
    return True


def api_examples() -> list[tuple[str, str]]:
    sys.path.insert(0, str(DOCS / "_gen"))
    import hooks  # noqa: E402  (docs/_gen/hooks.py: the same function that writes the API pages)

    return [(f"{cls} ({v['names'][0]})", hooks.api_example(v["names"][0], v["needs_labels"], v["uses_reference"]))
            for cls, v in hooks.estimator_classes().items()]


def run_api_examples(workdir: Path, env: dict) -> bool:
    """All estimator examples in ONE Python process (imports once; each example in its own namespace)."""
    examples = api_examples()
    prog = ["import traceback, time", "failed = []"]
    for label, code in examples:
        prog += [f"t0 = time.perf_counter()", "try:",
                 f"    exec({code!r}, {{}})",
                 f"    print('  api: {label} ok (%.1f s)' % (time.perf_counter() - t0), flush=True)",
                 "except Exception:",
                 f"    failed.append({label!r}); print('  api: {label} FAILED'); traceback.print_exc()"]
    prog += ["raise SystemExit(1 if failed else 0)"]
    proc = subprocess.run([sys.executable, "-c", "\n".join(prog)], cwd=workdir, env=env, text=True)
    return proc.returncode == 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pages", nargs="*", type=Path, help="Only these pages (default: every page marked to run).")
    ap.add_argument("--workdir", type=Path, help="Working folder (default: a new temporary folder).")
    ap.add_argument("--api", action="store_true", help="Also run the generated estimator examples.")
    args = ap.parse_args(argv)
    pages = [p.resolve() for p in args.pages] or [p for p in nav_pages() if RUN_MARK in p.read_text()]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ht-docs-"))
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])}
    print(f"tutorials in {workdir}")
    t0 = time.perf_counter()
    for page in pages:
        print(f"{page.relative_to(ROOT)}", flush=True)
        if not run_page(page, workdir, env):
            return 1
    if args.api and not run_api_examples(workdir, env):
        return 1
    print(f"all tutorials ran in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
