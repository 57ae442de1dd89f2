"""DICOM JSON (PS3.18 F.2) for query results and instance metadata."""

from __future__ import annotations

from typing import Any, Callable

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset

from gateway.archive.query import vr_of

_NUMERIC = {"IS", "US", "UL", "SS", "SL", "FL", "FD", "DS", "UV", "SV"}


def element(keyword: str, value: Any) -> tuple[str, dict]:
    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword
    vr = vr_of(keyword)
    out: dict[str, Any] = {"vr": vr}
    values = value if isinstance(value, list) else ([] if value is None or value == "" else [value])
    if values:
        if vr == "PN":
            out["Value"] = [{"Alphabetic": str(v)} for v in values]
        elif vr in _NUMERIC:
            out["Value"] = [int(v) if vr in ("IS", "US", "UL", "SS", "SL", "UV", "SV") else float(v) for v in values]
        else:
            out["Value"] = [str(v) for v in values]
    return f"{tag:08X}", out


def result_json(result: dict[str, Any], retrieve_url: str | None) -> dict[str, dict]:
    """One QIDO match (keyword -> value) as a DICOM JSON object, keys in tag order."""
    items = dict(element(k, v) for k, v in result.items() if not k.startswith("_"))
    items["00080005"] = {"vr": "CS", "Value": ["ISO_IR 192"]}
    items["00080056"] = {"vr": "CS", "Value": ["ONLINE"]}  # InstanceAvailability
    if retrieve_url:
        items["00081190"] = {"vr": "UR", "Value": [retrieve_url]}
    return dict(sorted(items.items()))


def dataset_json(ds: Dataset, bulk_uri: Callable[[str], str], threshold: int = 1024) -> dict:
    """Instance metadata; top-level values over ``threshold`` bytes (and pixel data) become BulkDataURIs."""

    def handler(elem) -> str:  # type: ignore[no-untyped-def]
        return bulk_uri(f"{int(elem.tag):08X}")

    out = ds.to_json_dict(bulk_data_threshold=threshold, bulk_data_element_handler=handler)
    return out
