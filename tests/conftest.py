import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

@pytest.fixture
def odd_tmp(tmp_path):
    """A temp folder whose name has spaces and quotes, as users' paths do."""
    p = tmp_path / "dir with 'quotes' and spaces"
    p.mkdir()
    return p
