"""Copy the headline sections of the committed result tables into benchmarks/README.md.

    python benchmarks/_readme.py

Each benchmark's block in the README (from its `### ` heading to the next `### ` or `## `)
is rebuilt from its `results/<name>.md`: a one-line pointer plus the sections listed below,
one heading level down. Run it after a benchmark run, so the README never drifts from the JSON.
"""

from __future__ import annotations

import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
BLOCKS = {
    "heart_shift": ["Headline", "Selection: selected vs oracle vs best baseline", "Speed against the goals"],
    "eicu_region": ["Headline", "Against APACHE IV (the clinical bar)"],
    "wearable_device": ["Headline", "Goals", "Why the devices do not share a signal"],
}


def sections(md: str, titles: list[str]) -> str:
    out = []
    parts = re.split(r"(?m)^(?=## )", md)
    for t in titles:
        for p in parts:
            if p.startswith(f"## {t}"):
                out.append(re.sub(r"(?m)^(#{2,3}) ", lambda m: "##" + m.group(1) + " ", p).rstrip() + "\n")
    return "\n".join(out)


def main() -> None:
    readme = HERE / "README.md"
    text = readme.read_text()
    for name, titles in BLOCKS.items():
        md = (HERE / "results" / f"{name}.md").read_text()
        title = md.splitlines()[0].lstrip("# ").strip()
        body = (f"### {title}\n\nFull tables: [`results/{name}.md`](results/{name}.md).\n\n" + sections(md, titles))
        pat = re.compile(rf"(?ms)^### [^\n]*\n\nFull tables: \[`results/{name}\.md`\].*?(?=^### |^## )")
        if not pat.search(text):
            raise SystemExit(f"README.md has no block for {name} (a '### ' heading followed by its 'Full tables' line)")
        text = pat.sub(lambda _: body + "\n", text, count=1)
    readme.write_text(text)
    print(f"updated {readme}")


if __name__ == "__main__":
    main()
