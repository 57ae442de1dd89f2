import pytest

from dicomweb.media import MediaTypeError, format_content_type, parse_content_type


@pytest.mark.parametrize(
    "value, expected",
    [
        ("application/dicom", ("application/dicom", {})),
        ("Application/DICOM", ("application/dicom", {})),
        ("  application/dicom  ", ("application/dicom", {})),
        (
            'multipart/related; type="application/dicom"; boundary="abc;def"',
            ("multipart/related", {"type": "application/dicom", "boundary": "abc;def"}),
        ),
        # unquoted type with a slash: common in real DICOMweb clients
        (
            "multipart/related; type=application/dicom; boundary=XyZ123",
            ("multipart/related", {"type": "application/dicom", "boundary": "XyZ123"}),
        ),
        # parameter names are case-insensitive, values keep their case
        ("text/plain; CharSet=UTF-8", ("text/plain", {"charset": "UTF-8"})),
        # backslash escapes inside quoted strings
        (r'a/b; x="q\"uo\\te\;d"', ("a/b", {"x": 'q"uo\\te;d'})),
        ('a/b; x=""', ("a/b", {"x": ""})),
        ('a/b; x="with space; and=equals"', ("a/b", {"x": "with space; and=equals"})),
        # tolerated: whitespace around '=', empty parameters, trailing ';'
        ("a/b ; x = 1 ;; y=2;", ("a/b", {"x": "1", "y": "2"})),
        ("a/b;\tx=1", ("a/b", {"x": "1"})),
        (
            'application/dicom; transfer-syntax=1.2.840.10008.1.2.1',
            ("application/dicom", {"transfer-syntax": "1.2.840.10008.1.2.1"}),
        ),
        ("application/dicom+xml", ("application/dicom+xml", {})),
        (b"application/dicom; x=1", ("application/dicom", {"x": "1"})),
    ],
)
def test_parse_ok(value, expected):
    assert parse_content_type(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "application",
        "/dicom",
        "application/",
        "application/dicom/extra",
        "application /dicom",
        "application/dicom garbage",
        "a/b; =1",
        "a/b; x",
        "a/b; x=",
        "a/b; x= ;",
        'a/b; x="unterminated',
        'a/b; x="dangling\\',
        "a/b; x=1; X=2",  # duplicate (ambiguous) parameter
        "a/b; x=1 2",
        'a/b; x=ab"c"',
        "a/b; x=\x01",
        'a/b; x="ctl\x00"',
        "a\x00/b",
        "a/b, c/d",
        "a/b; x=1 y=2",
        "ä/b",
    ],
)
def test_parse_errors(value):
    with pytest.raises(MediaTypeError) as ei:
        parse_content_type(value)
    assert isinstance(ei.value, ValueError)
    assert str(ei.value)


def test_parse_rejects_non_string():
    with pytest.raises(MediaTypeError):
        parse_content_type(None)  # type: ignore[arg-type]


def test_error_message_is_clear():
    with pytest.raises(MediaTypeError, match="unterminated quoted string"):
        parse_content_type('multipart/related; boundary="abc')
    with pytest.raises(MediaTypeError, match="duplicate parameter 'boundary'"):
        parse_content_type("multipart/related; boundary=a; boundary=b")


@pytest.mark.parametrize(
    "mtype, params",
    [
        ("multipart/related", {"type": "application/dicom", "boundary": "abc;def"}),
        ("application/dicom", {}),
        ("a/b", {"x": 'q"uo\\te', "y": "token", "z": ""}),
    ],
)
def test_format_round_trip(mtype, params):
    formatted = format_content_type(mtype, params)
    assert parse_content_type(formatted) == (mtype, params)


def test_format_quotes_only_when_needed():
    assert format_content_type("a/b", {"x": "tok"}) == "a/b; x=tok"
    assert format_content_type("a/b", {"x": "a/b"}) == 'a/b; x="a/b"'
    with pytest.raises(MediaTypeError):
        format_content_type("a/b", {"x": "bad\r\nvalue"})
    with pytest.raises(MediaTypeError):
        format_content_type("a/b", {"bad name": "v"})
