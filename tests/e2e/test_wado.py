"""WADO-RS through plain HTTP and dicomweb-client: instances byte for byte, metadata,
frames, bulk data, rendered images, thumbnails; consent and bad input."""

from __future__ import annotations

import io

import pytest
import requests
from PIL import Image
from pydicom import dcmread

from dicomweb.multipart import boundary_from_content_type, iter_parts
from tests.support.data import TRANSFER_SYNTAX_FILES, sample_file, uids, variant
from tests.support.gateway import user_token


def multipart(rsp) -> list[tuple[dict, bytes]]:
    assert rsp.status_code == 200, rsp.text[:300]
    out = []
    for part in iter_parts(io.BytesIO(rsp.content), boundary_from_content_type(rsp.headers["Content-Type"])):
        out.append((part.headers, part.file.read()))
        part.close()
    return out


@pytest.fixture(scope="module")
def stored(gateway):
    """Every transfer syntax file in its own account (several share UIDs), owner tokens."""
    prv = gateway.new_provider()
    out = {}
    for ts, name in TRANSFER_SYNTAX_FILES.items():
        acc = gateway.new_account()
        gateway.link(acc, prv, push=True, pull=True)
        raw = sample_file(name).read_bytes()
        assert gateway.stow(acc["id"], [raw], token=prv["token"]).status_code == 200
        out[ts] = (acc, raw, user_token(gateway, acc["owner"]))
    return gateway, prv, out


def get(gw, acc, path, token, accept=None, **params):
    headers = {"Authorization": f"Bearer {token}"}
    if accept:
        headers["Accept"] = accept
    return requests.get(f"{gw.url}/accounts/{acc['id']}/dicomweb/{path}", headers=headers, params=params, timeout=60)


OHIF_FRAMES = "multipart/related; type=application/octet-stream; transfer-syntax=*"


@pytest.mark.parametrize("ts", sorted(TRANSFER_SYNTAX_FILES))
def test_frames_with_transfer_syntax_star_are_as_stored(stored, ts):
    """What OHIF asks for (issue 14 point 2): every frame as stored, its transfer syntax in the part's
    Content-Type; never decoded (12-bit JPEG and YBR JPEG were decoded, or refused with 406)."""
    from pydicom.encaps import generate_frames

    gw, _, accounts = stored
    acc, raw, token = accounts[ts]
    study, series, sop = uids(raw)
    ds = dcmread(io.BytesIO(raw))
    [(headers, body)] = multipart(get(gw, acc, f"studies/{study}/series/{series}/instances/{sop}/frames/1",
                                      token, OHIF_FRAMES))
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        assert f"transfer-syntax={ts}" in headers["content-type"]
        nframes = int(ds.get("NumberOfFrames") or 1)
        assert body == next(generate_frames(ds.PixelData, number_of_frames=nframes))
    else:
        assert headers["content-type"].startswith("application/octet-stream")
        assert "transfer-syntax=" in headers["content-type"]


def test_frames_asked_in_another_transfer_syntax_are_refused(stored):
    gw, _, accounts = stored
    acc, raw, token = accounts["1.2.840.10008.1.2.4.50"]
    study, series, sop = uids(raw)
    path = f"studies/{study}/series/{series}/instances/{sop}/frames/1"
    asked = 'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.4.90'
    assert get(gw, acc, path, token, asked).status_code == 406


@pytest.mark.parametrize("ts", sorted(TRANSFER_SYNTAX_FILES))
def test_instance_study_series_retrieve_byte_for_byte(stored, ts):
    gw, _, accounts = stored
    acc, raw, token = accounts[ts]
    study, series, sop = uids(raw)
    for path in (f"studies/{study}", f"studies/{study}/series/{series}",
                 f"studies/{study}/series/{series}/instances/{sop}"):
        for accept in (None, 'multipart/related; type="application/dicom"; transfer-syntax=*',
                       f'multipart/related; type="application/dicom"; transfer-syntax={ts}'):
            rsp = get(gw, acc, path, token, accept)
            [(headers, body)] = multipart(rsp)
            assert body == raw
            assert headers["content-type"].startswith("application/dicom")
            assert ts in headers["content-type"]


def test_other_transfer_syntax_is_406(stored):
    gw, _, accounts = stored
    acc, raw, token = accounts["1.2.840.10008.1.2.4.50"]
    study = uids(raw)[0]
    rsp = get(gw, acc, f"studies/{study}", token,
              'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1')
    assert rsp.status_code == 406
    assert get(gw, acc, f"studies/{study}", token, "application/zip").status_code == 406


def test_dicomweb_client_retrieve(stored):
    from dicomweb_client.api import DICOMwebClient

    gw, _, accounts = stored
    acc, raw, token = accounts["1.2.840.10008.1.2.1"]
    study, series, sop = uids(raw)
    client = DICOMwebClient(url=f"{gw.url}/accounts/{acc['id']}/dicomweb",
                            headers={"Authorization": f"Bearer {token}"})
    [ds] = client.retrieve_study(study)
    assert ds.SOPInstanceUID == sop and ds.PixelData == dcmread(io.BytesIO(raw)).PixelData
    ds = client.retrieve_instance(study, series, sop)
    assert ds.SOPInstanceUID == sop
    [meta] = client.retrieve_study_metadata(study)
    assert meta["00080018"]["Value"] == [sop]
    frames = client.retrieve_instance_frames(study, series, sop, frame_numbers=[1])
    assert len(frames[0]) == 128 * 128 * 2


def test_metadata_at_each_level(stored):
    gw, _, accounts = stored
    acc, raw, token = accounts["1.2.840.10008.1.2.1"]
    study, series, sop = uids(raw)
    for path in (f"studies/{study}/metadata", f"studies/{study}/series/{series}/metadata",
                 f"studies/{study}/series/{series}/instances/{sop}/metadata"):
        rsp = get(gw, acc, path, token)
        assert rsp.status_code == 200 and rsp.headers["Content-Type"].startswith("application/dicom+json")
        [item] = rsp.json()
        assert item["00080018"]["Value"] == [sop]
        assert item["00100010"]["Value"] == [{"Alphabetic": "CompressedSamples^CT1"}]
        uri = item["7FE00010"]["BulkDataURI"]
        assert uri.endswith(f"/instances/{sop}/bulkdata/7FE00010")
        assert "InlineBinary" not in item["7FE00010"]
    # the bulk data URI gives the pixel data
    [(headers, body)] = multipart(get(gw, acc, f"studies/{study}/series/{series}/instances/{sop}/bulkdata/7FE00010", token))
    assert body == dcmread(io.BytesIO(raw)).PixelData


def test_frames_native_as_octet_stream(stored):
    gw, _, accounts = stored
    acc, raw, token = accounts["1.2.840.10008.1.2.1"]
    study, series, sop = uids(raw)
    [(headers, body)] = multipart(get(gw, acc, f"studies/{study}/series/{series}/instances/{sop}/frames/1", token))
    assert headers["content-type"].startswith("application/octet-stream")
    assert body == dcmread(io.BytesIO(raw)).PixelData


def test_frames_compressed_as_stored_or_decoded(stored):
    gw, _, accounts = stored
    acc, raw, token = accounts["1.2.840.10008.1.2.4.50"]
    study, series, sop = uids(raw)
    path = f"studies/{study}/series/{series}/instances/{sop}/frames/1"
    [(headers, body)] = multipart(get(gw, acc, path, token, 'multipart/related; type="image/jpeg"'))
    assert headers["content-type"].startswith("image/jpeg")
    assert body[:2] == b"\xff\xd8"
    assert Image.open(io.BytesIO(body)).size == (100, 100)
    [(headers, body)] = multipart(get(gw, acc, path, token, 'multipart/related; type="application/octet-stream"'))
    assert headers["content-type"].startswith("application/octet-stream")
    assert len(body) == 100 * 100 * 3
    assert get(gw, acc, path, token, 'multipart/related; type="image/jp2"').status_code == 406


@pytest.mark.parametrize("ts", sorted(TRANSFER_SYNTAX_FILES))
def test_rendered_and_thumbnail_for_every_transfer_syntax(stored, ts):
    gw, _, accounts = stored
    acc, raw, token = accounts[ts]
    study, series, sop = uids(raw)
    ds = dcmread(io.BytesIO(raw))
    base = f"studies/{study}/series/{series}/instances/{sop}"
    rsp = get(gw, acc, f"{base}/rendered", token, "image/jpeg")
    assert rsp.status_code == 200, rsp.text
    assert rsp.headers["Content-Type"] == "image/jpeg"
    img = Image.open(io.BytesIO(rsp.content))
    assert img.format == "JPEG" and img.size == (ds.Columns, ds.Rows)
    rsp = get(gw, acc, f"{base}/rendered", token, "image/png", viewport="64,64")
    img = Image.open(io.BytesIO(rsp.content))
    assert img.format == "PNG" and max(img.size) == 64
    rsp = get(gw, acc, f"{base}/thumbnail", token)
    assert Image.open(io.BytesIO(rsp.content)).format == "JPEG"
    assert get(gw, acc, f"studies/{study}/thumbnail", token).status_code == 200


def test_rendered_window_changes_the_image(stored):
    gw, _, accounts = stored
    acc, raw, token = accounts["1.2.840.10008.1.2.1"]
    study, series, sop = uids(raw)
    base = f"studies/{study}/series/{series}/instances/{sop}/rendered"
    a = get(gw, acc, base, token, "image/png").content
    b = get(gw, acc, base, token, "image/png", window="0,100").content
    assert a != b
    assert get(gw, acc, base, token, "image/png", window="x,y").status_code == 400
    assert get(gw, acc, base, token, "image/gif").status_code == 406
    assert get(gw, acc, base, token, "image/png", viewport="0,-1").status_code == 400


@pytest.mark.parametrize("param, value", [
    ("quality", "\u00b2"), ("quality", "9" * 40), ("quality", "0"), ("viewport", "\u0661\u0662,10"),
    ("viewport", "10,99999999999999999999"), ("window", "nan,100"), ("window", "40,inf"),
])
def test_rendered_parameters_out_of_range_are_400(stored, param, value):
    gw, _, accounts = stored
    acc, raw, token = accounts["1.2.840.10008.1.2.1"]
    study, series, sop = uids(raw)
    base = f"studies/{study}/series/{series}/instances/{sop}/rendered"
    assert get(gw, acc, base, token, "image/png", **{param: value}).status_code == 400


@pytest.mark.parametrize("path,status", [
    ("studies/1.2.3.4.5.6.7", 404),
    ("studies/1.2..3", 400),
    ("studies/1.2.abc/metadata", 400),
])
def test_unknown_and_malformed(stored, path, status):
    gw, _, accounts = stored
    acc, _, token = accounts["1.2.840.10008.1.2.1"]
    assert get(gw, acc, path, token).status_code == status


def test_frames_out_of_range_and_bad_lists(stored):
    gw, _, accounts = stored
    acc, raw, token = accounts["1.2.840.10008.1.2.1"]
    study, series, sop = uids(raw)
    base = f"studies/{study}/series/{series}/instances/{sop}/frames"
    assert get(gw, acc, f"{base}/2", token).status_code == 404
    assert get(gw, acc, f"{base}/0", token).status_code == 400
    assert get(gw, acc, f"{base}/a,b", token).status_code == 400
    assert get(gw, acc, f"studies/{study}/series/{series}/instances/{sop}/bulkdata/zz", token).status_code == 400


def test_consent_on_retrieval(gateway):
    acc = gateway.new_account()
    sender = gateway.new_provider()
    gateway.link(acc, sender, push=True, sensitive=True)
    plain, sensitive = variant(), variant(ConfidentialityCode="HIV")
    assert gateway.stow(acc["id"], [plain, sensitive], token=sender["token"]).status_code == 200
    puller = gateway.new_provider()
    link = gateway.link(acc, puller, pull=True, push=False)
    flagged = gateway.new_provider()
    gateway.link(acc, flagged, pull=True, push=False, sensitive=True)

    def status(token, raw, suffix=""):
        return get(gateway, acc, f"studies/{uids(raw)[0]}{suffix}", token).status_code

    assert status(puller["token"], plain) == 200
    assert status(puller["token"], sensitive) == 404
    assert status(puller["token"], sensitive, "/metadata") == 404
    assert status(flagged["token"], sensitive) == 200
    assert status(sender["token"], plain) == 403  # push-only
    stranger = gateway.new_account()
    assert status(user_token(gateway, stranger["owner"]), plain) == 404
    gateway.revoke(link)
    assert status(puller["token"], plain) == 404
    rsp = requests.get(f"{gateway.url}/accounts/{acc['id']}/dicomweb/studies/{uids(plain)[0]}", timeout=30)
    assert rsp.status_code == 401


def test_retrievals_are_audited(gateway):
    from gateway.ops import audit

    acc = gateway.new_account()
    prv = gateway.new_provider()
    gateway.link(acc, prv, push=True, pull=True)
    raw = variant()
    assert gateway.stow(acc["id"], [raw], token=prv["token"]).status_code == 200
    assert get(gateway, acc, f"studies/{uids(raw)[0]}", prv["token"]).status_code == 200
    with gateway.services.db.session() as s:
        [entry] = [e for e in audit.entries(s, acc["id"]) if e["action"] == "study.retrieved"]
    assert entry["actor"].startswith("provider:") and entry["detail"]["instances"] == 1
    assert entry["study"] == uids(raw)[0]


def test_large_study_streams(gateway):
    """A study of 40 instances streams and parses back instance by instance."""
    acc = gateway.new_account()
    prv = gateway.new_provider()
    gateway.link(acc, prv, push=True, pull=True)
    first = variant()
    study, series, _ = uids(first)
    bodies = [first] + [variant(study=study, series=series) for _ in range(39)]
    assert gateway.stow(acc["id"], bodies, token=prv["token"]).status_code == 200
    parts = multipart(get(gateway, acc, f"studies/{study}", prv["token"]))
    assert sorted(b for _, b in parts) == sorted(bodies)
