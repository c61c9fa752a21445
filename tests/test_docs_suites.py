"""docs/suites.md documents every dataset format with an example that the suite parser accepts."""

from __future__ import annotations

import re
from pathlib import Path

from clipscale.evals.adapters import FORMATS
from clipscale.evals.suite import parse_suite

DOC = Path(__file__).resolve().parents[1] / "docs" / "suites.md"


def _toml_blocks() -> list[str]:
    return re.findall(r"```toml\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


def test_every_example_is_a_valid_suite():
    blocks = _toml_blocks()
    assert len(blocks) >= len(FORMATS) + 2
    for i, block in enumerate(blocks):
        suite = parse_suite(block, source=f"docs/suites.md block {i}", base=Path("/data-root"))
        assert suite.jobs


def test_every_dataset_format_has_its_section_and_example():
    text = DOC.read_text(encoding="utf-8")
    examples = "\n".join(_toml_blocks())
    for fmt in FORMATS:
        assert f"### `{fmt}`" in text, fmt
        assert f'format = "{fmt}"' in examples, fmt
