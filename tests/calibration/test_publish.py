"""The measured expert loads the twin replays (package data) are the committed records, byte for byte."""

import pytest

from calibration import records as rec
from calibration.publish import expert_load_copy
from calibration.records_io import csv_bytes


@pytest.mark.parametrize("gpu", ["h100", "h200"])
def test_package_copy_of_expert_loads_equals_the_record(gpu):
    record = rec.MEASUREMENTS_DIR / gpu / "expert_load.csv"
    assert expert_load_copy(gpu).read_bytes() == csv_bytes(record)   # the record plain or gzipped
