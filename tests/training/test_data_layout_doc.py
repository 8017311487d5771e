"""docs/data_layout.md names the columns the reader reads and the synthetic writer writes."""

import re
from pathlib import Path

from m2dino_training.data.synthetic import CSV_COLUMNS

DOC = Path(__file__).resolve().parents[2] / "docs" / "data_layout.md"


def test_the_column_table_lists_the_written_columns():
    table = [line for line in DOC.read_text(encoding="utf-8").splitlines() if line.startswith("| `")]
    documented = {name for line in table for name in re.findall(r"`([a-z_0-9]+)`", line.split("|")[1])}
    written = set(CSV_COLUMNS)
    points = {name for name in written if re.fullmatch(r"point_\d+_xy", name)}
    assert {"point_1_xy", "point_2_xy"} <= documented and points
    assert documented - {"point_1_xy", "point_2_xy"} == written - points
