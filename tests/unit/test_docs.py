"""The READMEs' generated tables (settings, state vector) match the code."""
import pytest

from tempest_common.docs import blocks, render


@pytest.mark.parametrize("path", list(blocks()))
def test_readme_tables_are_current(path):
    text = path.read_text()
    assert render(text, blocks()[path]) == text, f"{path.name} is stale: run python -m tempest_common.docs"
