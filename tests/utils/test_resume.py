"""Markers and pins (stovtal.utils.resume): the one resume mechanism of every resumable unit."""

import json

import pytest

from stovtal.utils.resume import fingerprint, pin, read_marker, write_marker


def test_a_marker_is_absent_accepted_or_refused_naming_the_file(tmp_path):
    path = tmp_path / "unit" / "done.json"
    assert read_marker(path, ["a"]) is None
    write_marker(path, {"fingerprint": "a", "n": 3})
    assert json.loads(path.read_text()) == {"fingerprint": "a", "n": 3}
    assert read_marker(path, ["a"]) == {"fingerprint": "a", "n": 3}
    assert read_marker(path, ["new", "a"])["n"] == 3  # an identity of an earlier version
    with pytest.raises(ValueError, match=r"done\.json: made by other work"):
        read_marker(path, ["b"])
    with pytest.raises(KeyError, match="was a"):
        read_marker(path, ["b"], mismatch=lambda old: f"was {old['fingerprint']}", error=KeyError)
    # the identity under another key, or derived from the record (tuples compare as lists)
    write_marker(path, {"config": {"k": [1, 2], "count": 5}})
    assert read_marker(path, [{"k": [1, 2], "count": 5}], key="config") is not None
    assert read_marker(path, [[1, 2]], identity=lambda r: r["config"]["k"]) is not None
    with pytest.raises(ValueError):
        read_marker(path, ["a"])  # no "fingerprint" entry: not this work
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="other work"):
        read_marker(path, ["a"])


def test_pin_writes_once_then_checks(tmp_path):
    path = tmp_path / "stage.json"
    assert pin(path, {"fingerprint": "f1", "stage": "base"}) == {"fingerprint": "f1", "stage": "base"}
    assert pin(path, {"fingerprint": "f1", "stage": "other name"})["stage"] == "base"  # kept as written
    assert pin(path, {"fingerprint": "f2"}, accepted=["f2", "f1"])["fingerprint"] == "f1"
    with pytest.raises(ValueError, match="stage.json: changed"):
        pin(path, {"fingerprint": "f2"}, mismatch="changed")
    assert json.loads(path.read_text())["fingerprint"] == "f1"


def test_fingerprint_is_stable_and_order_free():
    # work directories hold such hashes (selftrain's stage.json): the value must not change
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1}) == "e6f20bdc3757e5e7"
    assert fingerprint({"a": 1}) != fingerprint({"a": 1.5})
