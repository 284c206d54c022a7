"""What counts as an integer or a number in argument checks: bools never, numpy scalars always."""
from __future__ import annotations

import numpy as np
import pytest

from models.checks import check_int, is_int, is_number


@pytest.mark.parametrize("value, integer, number", [
    (3, True, True), (np.int64(3), True, True), (np.uint8(3), True, True),
    (3.0, False, True), (np.float32(0.5), False, True),
    (True, False, False), (np.bool_(True), False, False),
    ("3", False, False), (None, False, False), ([3], False, False),
])
def test_kinds(value, integer, number):
    assert is_int(value) is integer and is_number(value) is number


def test_check_int_names_the_value_and_returns_a_python_int():
    assert check_int("n_ctx", np.int32(5), 1) == 5 and type(check_int("n_ctx", np.int32(5), 1)) is int
    with pytest.raises(ValueError, match=r"hop must be an int >= 1, got 0"):
        check_int("hop", 0, 1)
    with pytest.raises(ValueError, match=r"hop must be an int >= 1, got True"):
        check_int("hop", True, 1)
    with pytest.raises(ValueError, match=r"hop must be an int >= 1, got 2\.0"):
        check_int("hop", 2.0, 1)
