"""Numbers from requests: ASCII digits only, within bounds, a message naming the parameter."""

from __future__ import annotations

import pytest

from gateway.numbers import INT64_MAX, NumberError, parse_int


@pytest.mark.parametrize("raw,expected", [("0", 0), ("42", 42), ("-7", -7), ("007", 7),
                                          (str(INT64_MAX), INT64_MAX)])
def test_whole_numbers_in_range(raw, expected):
    assert parse_int(raw, "n", minimum=-10) == expected


@pytest.mark.parametrize("raw", ["", " 1", "1 ", "+1", "1_000", "1e3", "1.0", "0x10", "\u00b2", "\u0661\u0662",
                                 str(INT64_MAX + 1), "9" * 20, "9" * 5000, "-11"])
def test_anything_else_is_refused_with_the_name(raw):
    with pytest.raises(NumberError, match=r"^offset must be a whole number from -10 to \d+, not "):
        parse_int(raw, "offset", minimum=-10)


def test_bounds_and_default():
    assert parse_int(None, "limit", minimum=1, maximum=1000, default=200) == 200
    assert parse_int(None, "before") is None
    assert parse_int("1000", "limit", minimum=1, maximum=1000) == 1000
    for raw in ("0", "1001"):
        with pytest.raises(NumberError, match="limit must be a whole number from 1 to 1000"):
            parse_int(raw, "limit", minimum=1, maximum=1000)


def test_a_long_value_is_not_echoed_whole():
    with pytest.raises(NumberError) as exc:
        parse_int("x" * 10_000, "offset")
    assert len(str(exc.value)) < 200
