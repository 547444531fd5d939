"""docs/benchmarks.md names only results files that exist, and every table of numbers has one;
docs/architecture.md's models table and the public exports list every registered model."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
RESULTS = ROOT / "benchmarks" / "results"

# Bare file names in the doc that are inputs, not results.
NOT_RESULTS = {"Beauty_item2attributes.json"}

# `benchmarks/results/...`, with shell globs, `{a,b}` alternatives and `$seed`-style variables.
RESULT_PATH = re.compile(r"benchmarks/results/([\w.{},*$/-]*[\w*}])")
# A bare result name (`s3rec.json`, `graph_social_{ciao,lastfm}.md`), or a suffix of the
# name before it in a command comment (`(-dim256.json)`); not part of a longer path.
BARE_NAME = re.compile(r"(?<![\w/.$-])(-?[\w*{},-]*[\w}]\.(?:json|md|png))(?![\w.])")
SHELL_VARIABLE = re.compile(r"\$\{?\w+\}?")
HEADING = re.compile(r"^#{2,3} ")
SEPARATOR_ROW = re.compile(r"^\|[\s:|-]+\|$")


def expand_braces(pattern: str) -> list[str]:
    """`a{b,c}d` -> `abd`, `acd` (nested alternatives are not used in the doc)."""
    match = re.search(r"\{([^{}]*)\}", pattern)
    if match is None:
        return [pattern]
    head, tail = pattern[: match.start()], pattern[match.end() :]
    return [
        name for choice in match.group(1).split(",") for name in expand_braces(head + choice + tail)
    ]


def result_references(text: str) -> list[str]:
    """Every results file the text names, relative to `benchmarks/results/`."""
    references = RESULT_PATH.findall(text)
    without_paths = RESULT_PATH.sub(" ", text)
    references += [name for name in BARE_NAME.findall(without_paths) if name not in NOT_RESULTS]
    return references


def resolves(reference: str, results: Path) -> bool:
    """Each alternative of the reference matches at least one file or folder under `results`."""
    pattern = SHELL_VARIABLE.sub("*", reference)
    if pattern.startswith("-"):
        pattern = "*" + pattern
    return all(any(results.glob(name)) for name in expand_braces(pattern))


def missing_results(text: str, results: Path) -> list[str]:
    return [ref for ref in result_references(text) if not resolves(ref, results)]


def sections(text: str) -> list[tuple[str, list[str]]]:
    """(heading, lines) per `##` / `###` heading; `#` lines inside code blocks are not headings."""
    found: list[tuple[str, list[str]]] = [("(top)", [])]
    in_code = False
    for line in text.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if not in_code and HEADING.match(line):
            found.append((line.lstrip("#").strip(), []))
        else:
            found[-1][1].append(line)
    return found


def has_table_of_numbers(lines: list[str]) -> bool:
    """A Markdown table with a digit in a body row (header rows are names such as `NDCG@10`)."""
    in_body = False
    for line in lines:
        row = line.strip()
        if not row.startswith("|"):
            in_body = False
        elif SEPARATOR_ROW.match(row):
            in_body = True
        elif in_body and re.search(r"\d", row):
            return True
    return False


def sections_without_results(text: str, results: Path) -> list[str]:
    return [
        heading
        for heading, lines in sections(text)
        if has_table_of_numbers(lines)
        and not any(resolves(ref, results) for ref in result_references("\n".join(lines)))
    ]


def test_every_named_results_file_exists() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert len(result_references(text)) > 50
    assert missing_results(text, RESULTS) == []


def test_every_table_of_numbers_names_a_results_file() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert sum(has_table_of_numbers(lines) for _, lines in sections(text)) > 10
    assert sections_without_results(text, RESULTS) == []


@pytest.mark.parametrize(
    ("good", "broken"),
    [
        ("--out benchmarks/results/s3rec.json", "--out benchmarks/results/s3rec-typo.json"),
        ("`bert4rec-toys.json`", "`bert4rec-toyz.json`"),
        ("(-dim256.json)", "(-dim512.json)"),
        ("graph_social_{ciao,lastfm}.md", "graph_social_{ciao,lastfm,yelp}.md"),
        ("`social_no_edges_{ciao,lastfm}.md`", "`social_no_edges_{ciao,yelp}.md`"),
        ("transfer-scarce-20/seed$seed.json", "transfer-scarce-30/seed$seed.json"),
    ],
)
def test_a_broken_name_is_caught(good: str, broken: str) -> None:
    text = DOC.read_text(encoding="utf-8")
    assert good in text
    assert missing_results(text.replace(good, broken, 1), RESULTS) != []


def test_a_deleted_results_file_is_caught(tmp_path: Path) -> None:
    results = tmp_path / "results"
    shutil.copytree(RESULTS, results)
    (results / "throughput_beauty.json").unlink()
    text = DOC.read_text(encoding="utf-8")
    assert "throughput_beauty.json" in missing_results(text, results)
    assert "Throughput of the sequence models at one size" in sections_without_results(
        text, results
    )


def test_a_table_of_numbers_needs_an_existing_results_file(tmp_path: Path) -> None:
    (tmp_path / "run.json").write_text("{}")
    table = "| model | NDCG@10 |\n|---|---|\n| sasrec | 0.0466 |\n"
    names_only = "| model | role |\n|---|---|\n| sasrec | next item |\n"
    text = (
        f"## Sourced\n\n`benchmarks/results/run.json`\n\n{table}\n"
        f"## Unsourced\n\n```bash\n# a comment, not a heading\n```\n\n{table}\n"
        f"## Missing source\n\n`benchmarks/results/gone.json`\n\n{table}\n"
        f"## No numbers\n\n{names_only}"
    )
    assert sections_without_results(text, tmp_path) == ["Unsourced", "Missing source"]
    assert missing_results(text, tmp_path) == ["gone.json"]


def test_the_models_table_is_the_registrys() -> None:
    from evorec.models import models_table

    assert models_table() in ARCHITECTURE.read_text(), (
        "the models table of docs/architecture.md differs from the registry: replace it with "
        "the output of python -c 'from evorec.models import models_table; print(models_table())'"
    )


def test_a_model_missing_from_the_table_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    from evorec.models import MODELS, MostPopular, models_table

    class Unlisted(MostPopular):
        """A model no document names."""

    monkeypatch.setitem(MODELS, "unlisted", Unlisted)
    assert "| `unlisted` | `Unlisted` |" in models_table()
    assert models_table() not in ARCHITECTURE.read_text()


def test_every_registered_model_is_exported() -> None:
    import evorec
    import evorec.models
    from evorec.models import MODELS

    for package in (evorec, evorec.models):
        missing = [cls.__name__ for cls in MODELS.values() if cls.__name__ not in package.__all__]
        assert not missing, f"{package.__name__}.__all__ lacks {missing}"
        assert all(getattr(package, cls.__name__) is cls for cls in MODELS.values())
