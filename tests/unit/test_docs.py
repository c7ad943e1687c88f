"""The READMEs' generated tables (settings, state vector) match the code."""
import pytest

from tools.readme_tables import blocks, render


@pytest.mark.parametrize("path", list(blocks()))
def test_readme_tables_are_current(path):
    text = path.read_text()
    assert render(text, blocks()[path]) == text, f"{path.name} is stale: run python -m tools.readme_tables"
