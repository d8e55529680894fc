"""README.md and BENCHMARKS.md say one thing: README's benchmark rows are BENCHMARKS.md's current rows,
every figure README's Benchmarks section quotes is among BENCHMARKS.md's current figures, no run labels
("lease T") outside BENCHMARKS.md's history, and every extra an install command names exists."""
from __future__ import annotations

import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
BENCHMARKS = (ROOT / "BENCHMARKS.md").read_text()
HISTORY_HEADING = "## History"


def section(text: str, heading: str) -> str:
    """The text from the line ``heading`` up to the next level-2 heading."""
    start = text.index(f"\n{heading}\n") + 1
    following = text.find("\n## ", start + len(heading))
    return text[start:following if following >= 0 else len(text)]


def current_benchmarks() -> str:
    """BENCHMARKS.md before its dated history."""
    return BENCHMARKS[:BENCHMARKS.index(f"\n{HISTORY_HEADING}")]


def table_rows(text: str, header_start: str) -> dict[str, dict[str, str]]:
    """The markdown table whose header row starts with ``header_start``: {first cell: {column: cell}}."""
    lines = text[text.index(header_start):].split("\n")
    columns = [cell.strip() for cell in lines[0].strip().strip("|").split("|")]
    rows = {}
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        rows[cells[0]] = dict(zip(columns, cells))
    return rows


def decimals(text: str) -> set[str]:
    """Every decimal figure (``179.8``, ``0.899``) in ``text``: the measured values, not counts."""
    return set(re.findall(r"(?<![\w.])\d+\.\d+(?![\w.]*\d)", text))


def test_readme_benchmark_rows_are_benchmarks_current_rows():
    readme_rows = table_rows(section(README, "## Benchmarks"), "| what | figure | machine | target | met? |")
    current_rows = table_rows(current_benchmarks(), "| what | figure | machine | command | target | met? |")
    assert len(readme_rows) >= 5
    for what, row in readme_rows.items():
        assert what in current_rows, f"README row {what!r} is not in BENCHMARKS.md's current table"
        for column in ("figure", "machine", "target", "met?"):
            assert row[column] == current_rows[what][column], f"{what!r}: {column} differs"


def test_every_figure_readme_quotes_is_a_current_benchmark_figure():
    quoted = decimals(section(README, "## Benchmarks"))
    assert {"179.8", "0.899", "2.760"} <= quoted
    assert quoted - decimals(current_benchmarks()) == set()


def test_run_labels_only_in_benchmarks_history():
    label = re.compile(r"\bleases? [A-Z](?:-[A-Z])?\b")
    assert label.findall(README) == []
    assert label.findall(current_benchmarks()) == []
    assert label.findall(BENCHMARKS[BENCHMARKS.index(f"\n{HISTORY_HEADING}"):])  # the history keeps them


def test_readme_install_extras_exist():
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    named = set()
    for group in re.findall(r"(?:'\.|mmg-export)\[([a-z0-9,-]+)\]", README):
        named.update(group.split(","))
    assert {"cpu", "gpu", "export", "serve"} <= named
    assert named - extras == set()


def test_readme_names_where_each_backend_ran():
    table = table_rows(README, "| backend or part | built | run |")
    assert table["Jetson (JetPack 6 / 7: Orin, Thor), DLA"]["run"].startswith("never")
    assert table["TensorRT 10.3 / 11 (`--backend tensorrt`, the default on a GPU where it imports)"]["built"].startswith(
        "never")
    assert "docs/unverified.md" in README[:README.index("| backend or part |")]


def test_readme_names_every_run_json_field():
    from mmg_runtime.pipeline import Answer, Timings

    answer = Answer("", [], None, Timings(), prompt_tokens=0, finish_reason="stop", providers={},
                    extra={"frames_encoded": 0, "frames_dropped": 0, "window_seconds": 0.0})
    quickstart = section(README, "## Quickstart: the built-in tiny model")
    missing = [key for key in answer.to_json() if f"`{key}`" not in quickstart]
    assert missing == []


def test_readme_names_every_sampling_field():
    from dataclasses import fields

    from mmg_runtime.llm.base import Sampling

    api = section(README, "## Python API")
    serving = section(README, "## Serving: an OpenAI-compatible API")
    for field in fields(Sampling):
        assert f"`{field.name}`" in api and f"`{field.name}`" in serving, field.name
    assert "answered greedily" in serving


def test_pending_benchmarks_are_marked_and_not_quoted():
    current = table_rows(current_benchmarks(), "| what | figure | machine | command | target | met? |")
    pending = {what for what, row in current.items() if row["figure"].startswith("pending")}
    assert all(what.startswith("**pending:**") and current[what]["met?"] == "pending" for what in pending)
    assert "pending" not in section(README, "## Benchmarks")
