"""The generated documentation pages cannot drift from the code, and the tutorial runner parses
what it must run (fast: no site build; ``test_site_browser.py`` builds it)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

ROOT = Path(__file__).resolve().parents[2]


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


hooks = _load("docs_hooks", ROOT / "docs/_gen/hooks.py")
runner = _load("docs_tutorials", ROOT / "scripts/docs_tutorials.py")


def _models(module_models):
    seen, todo = [], list(module_models)
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.append(m)
        for _, f in hooks.model_fields(m):
            nested = hooks._nested_model(f)
            if nested is not None:
                todo.append(nested)
    return seen


def test_study_page_lists_every_key_with_a_meaning():
    from healthtransfer.study.config import Study

    page = hooks.study_file_page()
    for model in _models([Study]):
        if model is Study:
            continue
        for key, field in hooks.model_fields(model):
            assert f"| `{key}` |" in page, f"{model.__name__}.{key} is missing from the study file page"
            assert field.description, (f"{model.__name__}.{key} has no description: add "
                                       "Field(description=...) so the generated reference explains it")


def test_schema_page_lists_every_key_with_a_meaning():
    from healthtransfer.data.schema import DatasetSchema

    page = hooks.schema_file_page()
    for model in _models([DatasetSchema]):
        for key, field in hooks.model_fields(model):
            assert f"| `{key}` |" in page, f"{model.__name__}.{key} is missing from the schema file page"
            assert field.description, f"{model.__name__}.{key} has no description"


def test_method_reference_and_api_pages_cover_the_registry():
    from healthtransfer.methods import available_methods

    page = hooks.methods_page()
    api = "\n".join(hooks.api_pages().values())
    for name in available_methods():
        assert f"| `{name}` |" in page
        assert f"`{name}`" in api
    for cls in hooks.estimator_classes():
        assert f"::: {cls}" in api


def test_benchmark_pages_have_a_plot_a_loss_section_and_every_pair():
    files = hooks.benchmark_pages()
    for name, slug in hooks.PROTOCOL_BENCHMARKS.items():
        page = files[f"benchmarks/{slug}.md"]
        assert "## Where we lose" in page
        assert files[f"benchmarks/img/{name}.png"][:4] == b"\x89PNG"
        pairs = json.loads((hooks.RESULTS / f"{name}.json").read_text())["config"]["pairs"]
        for pair in pairs:
            assert f"| {pair} |" in page, f"{pair} missing from {slug}"


def test_runner_reads_files_skips_and_languages():
    text = ('<!-- docs-check: run -->\n```toml title="a.toml"\nx = 1\n```\n\n<!-- docs-check: skip -->\n'
            "```bash\nrm -rf /\n```\n```python\nprint(1)\n```\n```text\nshown\n```\n")
    blocks = runner.parse_blocks(text)
    assert [(b.lang, b.title, b.skip) for b in blocks] == [
        ("toml", "a.toml", False), ("bash", None, True), ("python", None, False), ("text", None, False)]
    assert blocks[0].code == "x = 1\n"


def test_runner_rejects_an_unclosed_block():
    with pytest.raises(ValueError, match="line 2"):
        runner.parse_blocks("text\n```bash\nls\n")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["bash", "python", "toml", "text"]),
                          st.lists(st.text(alphabet=st.characters(blacklist_characters="`\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"),
                                           max_size=30), max_size=4),
                          st.booleans()), max_size=5))
def test_runner_parses_back_what_a_page_holds(spec):
    parts = []
    for lang, lines, skip in spec:
        parts += (["<!-- docs-check: skip -->"] if skip else []) + [f"```{lang}", *lines, "```", ""]
    blocks = runner.parse_blocks("\n".join(parts))
    assert [(b.lang, b.skip) for b in blocks] == [(lang, skip) for lang, _, skip in spec]
    assert [b.code for b in blocks] == ["\n".join(lines) + "\n" for _, lines, _ in spec]


def test_cli_page_lists_every_command_and_option():
    import click
    import typer

    from healthtransfer.cli import app

    page = hooks.cli_page()

    def leaves(cmd, path):
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                yield from leaves(sub, [*path, "serve keys" if name == "serve-keys" else name])
        else:
            yield " ".join(path), cmd

    for path, cmd in leaves(typer.main.get_command(app), []):
        assert f"## `healthtransfer {path}`" in page, path
        for p in cmd.params:
            if isinstance(p, click.Option) and p.name != "help":
                assert f"`{p.opts[0]}`" in page, (path, p.opts)
