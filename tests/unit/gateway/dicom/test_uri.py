"""gateway.dicom.uri: DICOMweb resource URLs built and parsed in one place."""

from __future__ import annotations

import pytest

from gateway.dicom.uri import URI

BASE = "https://pacs.example/accounts/acme/dicomweb"


def test_urls_of_each_level():
    assert str(URI(BASE)) == BASE
    assert str(URI(BASE, "1.2")) == f"{BASE}/studies/1.2"
    assert str(URI(BASE, "1.2", "1.2.3")) == f"{BASE}/studies/1.2/series/1.2.3"
    assert str(URI(BASE, "1.2", "1.2.3", "1.2.3.4")) == f"{BASE}/studies/1.2/series/1.2.3/instances/1.2.3.4"
    assert str(URI(BASE, "1.2", "1.2.3", "1.2.3.4", (1, 3))) == \
        f"{BASE}/studies/1.2/series/1.2.3/instances/1.2.3.4/frames/1,3"
    assert str(URI(BASE + "/", "1.2")) == f"{BASE}/studies/1.2"  # one slash, whatever the base ends with


def test_levels_and_parents():
    uri = URI(BASE, "1.2", "1.2.3", "1.2.3.4", (2,))
    assert uri.level == "frames"
    assert uri.instance_uri().level == "instance" and uri.series_uri().level == "series"
    assert str(uri.study_uri()) == f"{BASE}/studies/1.2"
    assert URI(BASE).level == "service"


@pytest.mark.parametrize("args", [
    (BASE, None, "1.2.3"), (BASE, "1.2", None, "1.2.3.4"), (BASE, "1.2", "1.2.3", None, (1,)),
    (BASE, "1.2", "1.2.3", "1.2.3.4", ()), (BASE, "1.2", "1.2.3", "1.2.3.4", (0,)),
    (BASE, "1.2", "1.2.3", "1.2.3.4", (True,)),
])
def test_incomplete_or_wrong_uris_are_refused(args):
    with pytest.raises(ValueError):
        URI(*args)


@pytest.mark.parametrize("uri", [
    URI(BASE), URI(BASE, "1.2"), URI(BASE, "1.2", "1.2.3"), URI(BASE, "1.2", "1.2.3", "1.2.3.4"),
    URI(BASE, "1.2", "1.2.3", "1.2.3.4", (1, 3)),
])
def test_parse_reads_back_what_str_writes(uri):
    assert URI.parse(str(uri)) == uri


def test_parse_ignores_a_query_and_a_trailing_slash():
    assert URI.parse(f"{BASE}/studies/1.2/?includefield=all") == URI(BASE, "1.2")


@pytest.mark.parametrize("url", [
    f"{BASE}/studies/../series/1.2", f"{BASE}/studies/1.2/instances/1.2.3", f"{BASE}/studies/1.2/series",
    f"{BASE}/studies/1.02", f"{BASE}/studies/1.2/series/1.2.3/instances/1.2.3.4/frames/a",
    f"{BASE}/studies/1.2/series/1.2.3/instances/1.2.3.4/frames/0",
    f"{BASE}/studies/1.2/series/1.2.3/instances/1.2.3.4/frames/1/rendered",
])
def test_parse_refuses_what_is_not_a_resource(url):
    with pytest.raises(ValueError):
        URI.parse(url)
