"""The fixed cost table of the cost-model tests: the shipped 2-core CPU row's rates
(calibration.json, 2026-11-27), written out so that the tests do not follow the shipped row."""

import pytest

from ntk_zoo.core import CostTable, reset_tables, use_table

TABLE = CostTable("cpu", 1.7965e11, 9.675e9, 5.2467e9, 1.0357e-6)


@pytest.fixture
def fixed_table(tmp_path, monkeypatch):
    """``TABLE`` as the active table, with an empty cache directory (no user calibration)."""
    monkeypatch.setenv("NTK_ZOO_CACHE_DIR", str(tmp_path))
    reset_tables()
    use_table(TABLE)
    yield TABLE
    reset_tables()
