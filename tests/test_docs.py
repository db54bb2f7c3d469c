"""Every ```python block of README.md and of every page in docs/ runs: a page's blocks in
order, in one namespace, in a fresh working directory.

A block right after ``<!-- multihost-example: NAME -->`` starts several processes and is run
by ``tests/parallel/test_processes.py`` (which looks the marker up); nothing else is left out.
"""

from __future__ import annotations

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"(<!-- multihost-example: [^>]* -->\n)?```python\n(.*?)```", re.S)
RUN_ELSEWHERE = ROOT / "tests" / "parallel" / "test_processes.py"


def blocks(page: pathlib.Path) -> tuple[list[str], list[str]]:
    """(the page's python blocks to run here, those run by test_processes.py)."""
    here, elsewhere = [], []
    for match in BLOCK.finditer(page.read_text()):
        (elsewhere if match.group(1) else here).append(match.group(2))
    return here, elsewhere


PAGES = [p for p in DOCS if blocks(p)[0]]


def test_the_pages_have_code_and_the_multihost_blocks_are_run_elsewhere():
    assert len(PAGES) >= 5
    if any(blocks(p)[1] for p in DOCS):
        assert "multihost-example" in RUN_ELSEWHERE.read_text()


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_page_runs(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    # Rank promotion raises (tests/conftest.py): no implicit broadcasting in examples or library.
    for i, code in enumerate(blocks(page)[0]):
        exec(compile(code, f"{page.name} block {i + 1}", "exec"), namespace)


def test_the_benchmark_report_shows_every_results_file_in_order(tmp_path):
    from benchmarks import report

    for name in ("whole-dataset", "auto", "auto-quick"):
        (tmp_path / f"{name}.md").write_text(
            f"<!-- python -m benchmarks {name} -->\n\n| {name} |\n"
        )
    paths = report.results(str(tmp_path))
    assert [pathlib.Path(p).name for p in paths] == ["auto.md", "whole-dataset.md"]
    text = report.render(paths)
    assert text.index("## auto\n") < text.index("## whole-dataset\n")
    assert "`python -m benchmarks whole-dataset`" in text and "| auto-quick |" not in text
    assert "- commit: " in text and "- versions: ntk-zoo " in text


def test_a_benchmark_run_appends_to_its_results_file_and_keeps_the_history(
    tmp_path, monkeypatch, capsys
):
    import importlib
    import sys

    from benchmarks import _harness

    main = importlib.import_module("benchmarks.__main__")
    (tmp_path / "fake_suite.py").write_text("def main(argv):\n    print('| run', *argv, '|')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(main.SUITES, "fake", ("fake_suite", "a question"))
    monkeypatch.setattr(_harness, "RESULTS", str(tmp_path / "results"))
    main.run("fake", ["one"])
    results = tmp_path / "results" / "fake.md"
    results.write_text(results.read_text() + "A note written by hand.\n")
    main.run("fake", ["two"])
    main.run("fake", ["--quick"])
    main.run("fake", ["--quick", "again"])
    text = results.read_text()
    assert text.startswith("<!-- python -m benchmarks fake one -->\n\n| run one |\n")
    assert "A note written by hand.\n\n## " in text
    assert text.rstrip().endswith("| run two |") and "`python -m benchmarks fake two` at " in text
    quick = (tmp_path / "results" / "fake-quick.md").read_text()
    assert "| run --quick again |" in quick and "| run --quick |" not in quick
    assert "appended to" in capsys.readouterr().out
    sys.modules.pop("fake_suite", None)
