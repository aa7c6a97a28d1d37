"""CSV traces as users write them: a spreadsheet's byte-order mark, spaces after commas, integer
columns written as floats, ragged rows; and any text at all loads or is refused naming
traffic.trace_csv and the line (s22walk)."""

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twin.core.errors import ScenarioError
from twin.serving.workload import TRACE_FIELD, read_trace

HEADER = "arrival_s,input_len,output_len"


def _read(text: str | bytes):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t.csv"
        (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
        return read_trace(str(path), 0.0, 1000)


@pytest.mark.parametrize("text", [
    b"\xef\xbb\xbf" + (HEADER + "\r\n0,100,10\r\n0.5,200,20\r\n").encode(),   # Excel's "CSV UTF-8"
    "arrival_s, input_len, output_len\n0, 100, 10\n0.5, 200, 20\n",
    HEADER + "\n0,100.0,10.0\n0.5,200,20\n",                                    # pandas with a gap
])
def test_files_users_write_load(text):
    r = _read(text)
    assert list(r.input_len) == [100, 200] and list(r.output_len) == [10, 20]


@pytest.mark.parametrize("text, message", [
    (HEADER + "\n0,100,10,5\n", "line 2: as many fields as the header's 3"),         # accepted until s22walk
    (HEADER + "\n0,100,10\n\n0.1,100\n", "line 4: as many fields"),
    (HEADER + "\n0,100.5,10\n", "line 2: arrival_s a number; input_len, output_len and cached_len whole numbers"),
])
def test_ragged_or_fractional_rows_name_their_line(text, message):
    with pytest.raises(ScenarioError, match=message):
        _read(text)


CELL = st.one_of(st.integers(-5, 10**8).map(str), st.floats(allow_nan=True).map(str),
                 st.text(alphabet=' ,"\n\r\tab.e-+0123456789', max_size=8))


@settings(max_examples=80, deadline=None)
@given(rows=st.lists(st.lists(CELL, min_size=0, max_size=5), max_size=6), header=st.sampled_from([HEADER, HEADER + ",cached_len",
                                                                                                  " arrival_s ,input_len,output_len"]))
def test_any_text_loads_or_is_refused_naming_the_field(rows, header):
    text = header + "\n" + "\n".join(",".join(r) for r in rows)
    try:
        r = _read(text)
    except ScenarioError as exc:
        assert exc.field == TRACE_FIELD
    else:
        assert len(r.input_len) >= 1 and (r.input_len >= 1).all() and (r.output_len >= 1).all()
