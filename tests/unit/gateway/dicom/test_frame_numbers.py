"""gateway.dicom.frame_numbers: the {framelist} of a frames request, parsed, bounded and checked."""

from __future__ import annotations

import pytest

from gateway.dicom.frame_errors import MAX_FRAME_NUMBER, FrameError, FrameListRefused, FrameOutOfRange
from gateway.dicom.frame_numbers import check_frame_numbers, parse_frame_list


def test_parse_frame_list():
    assert parse_frame_list("1") == [1]
    assert parse_frame_list("1,3, 5") == [1, 3, 5]
    for bad in ("", "a", "1,,2", "1;2", "-1", "1.5", "\u0661", "1,\uff12"):  # int() takes non-ASCII digits
        with pytest.raises(FrameError):
            parse_frame_list(bad)


def test_parse_frame_list_limits():
    assert parse_frame_list(",".join(str(n) for n in range(1, 257))) == list(range(1, 257))
    assert parse_frame_list(str(MAX_FRAME_NUMBER)) == [MAX_FRAME_NUMBER]
    assert parse_frame_list("007") == [7]
    refused = {
        ",".join(str(n) for n in range(1, 258)): "at most 256",  # the default max_frames_per_request
        ",".join(["1"] * 500): "at most 256",
        "1,2,1": "more than once",
        "3,03": "more than once",
        str(MAX_FRAME_NUMBER + 1): "larger than any",
        "99999999999999999999": "larger than any",
        "9" * 5000: "larger than any",  # int() of 5000 digits raises ValueError
    }
    for text, words in refused.items():
        with pytest.raises(FrameListRefused, match=words):
            parse_frame_list(text)
    with pytest.raises(FrameListRefused, match="at most 3"):
        parse_frame_list("1,2,3,4", max_frames=3)
    assert parse_frame_list(",".join(str(n) for n in range(1, 1001)), max_frames=None)[-1] == 1000


def test_check_frame_numbers():
    assert check_frame_numbers([3, 1, 3], 3) == [3, 1, 3]  # repeats are parse_frame_list's refusal, not this one's
    for bad in ([0], [-1], [4], [1, 4]):
        with pytest.raises(FrameOutOfRange, match="does not exist: the instance has 3 frames"):
            check_frame_numbers(bad, 3)
    with pytest.raises(FrameOutOfRange, match="no pixel data"):
        check_frame_numbers([1], 0)
    with pytest.raises(FrameError, match="no frame numbers"):
        check_frame_numbers([], 3)
    for bad in ([True], ["1"], [1.0]):
        with pytest.raises(FrameError, match="not an integer"):
            check_frame_numbers(bad, 3)  # type: ignore[list-item]
