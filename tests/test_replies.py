"""The grader's receipt of a reply (worker/protocol.py's frames and schemas, sandbox/validation.py):
what the submission's process can put in a reply is either accepted as fresh plain data of the
op's schema or refused as malformed, quickly, whatever it is. In-process: frames are encoded and
decoded as on the wire, without a worker."""

import io
import pickle
import time
import zipfile

import pytest
import torch

from autograder.sandbox.validation import MalformedReply, reply as validated
from autograder.worker import protocol
from autograder.worker.protocol import Op


def _received(message, op=Op.RMSNORM):
    """`message` sent as a frame and received as the grader receives a reply."""
    payload = protocol.encode(message)[protocol.HEADER_BYTES:]
    return validated(protocol.decode(payload, bounded=True), op)


def _rmsnorm(**changes) -> dict:
    result = {"out": torch.randn(2, 3, 4), "grad_x": torch.randn(2, 3, 4), "grad_scale": None,
              "scale_is_parameter": True, "scale_shape": [4]}
    return {"ok": True, "result": {**result, **changes}, "notes": [], "memory": 2**28}


def _refused(message, match, op=Op.RMSNORM):
    with pytest.raises(MalformedReply, match=match):
        _received(message, op)


def test_an_honest_reply_comes_back_as_fresh_equal_data():
    message = _rmsnorm()
    got = _received(message)
    assert got["ok"] is True and got["memory"] == 2**28 and got["notes"] == []
    assert torch.equal(got["result"]["out"], message["result"]["out"])
    assert got["result"]["out"].is_contiguous() and got["result"]["scale_shape"] == [4]


def test_an_error_reply_keeps_the_claimed_internal_flag_as_data():
    error = {"kind": "KeyError", "message": "m", "line": None, "where": "", "internal": True}
    got = _received({"ok": False, "error": error, "notes": [], "memory": None})
    assert got["error"] == error


@pytest.mark.parametrize("out, match", [
    (torch.empty(2, 3, 4, device="meta"), "device meta"),
    (torch.randn(2, 3, 4).to_sparse(), "sparse"),
    (torch.randn(2, 3, 4).to(torch.complex64), "dtype torch.complex64"),
    (torch.quantize_per_tensor(torch.randn(2, 3, 4), 0.1, 0, torch.qint8), "quantized"),
    (torch.zeros(1).expand(2**14, 2**14, 2**14), "overlap"),
    (torch.randn(8, 8)[:, ::2], "gaps"),
    (torch.zeros(2, 3, 4, dtype=torch.long), "dtype torch.int64"),
    (torch.zeros((1,) * 9), "9 dimensions"),
    ([1.0, 2.0], "list, expected a tensor"),
], ids=["meta", "sparse", "complex", "quantized", "expanded", "strided", "integer", "rank", "list"])
def test_exotic_tensors_are_refused(out, match):
    _refused(_rmsnorm(out=out), match)


def test_a_transposed_tensor_is_copied_contiguous():
    out = torch.randn(4, 3, 2).transpose(0, 2)
    got = _received(_rmsnorm(out=out))["result"]["out"]
    assert got.is_contiguous() and torch.equal(got, out)


def test_two_fields_on_one_storage_are_refused():
    out = torch.randn(2, 3, 4)
    _refused(_rmsnorm(out=out, grad_x=out), "same object")
    _refused(_rmsnorm(out=out, grad_x=out.view(2, 12).view(2, 3, 4)), "sharing its storage")


@pytest.mark.parametrize("changes, match", [
    (dict(bogus=1), "unknown keys 'bogus'"),
    (dict(scale_is_parameter=1), "int, expected True or False"),
    (dict(scale_shape=(4,)), "tuple, expected a list"),
    (dict(scale_shape=[True]), "bool, expected an integer"),
    (dict(scale_shape=[4] * 9), "at most 8 items"),
], ids=["unknown_key", "int_for_bool", "tuple_for_list", "bool_for_int", "too_many"])
def test_wrong_keys_and_types_are_refused(changes, match):
    _refused(_rmsnorm(**changes), match)


def test_a_missing_key_and_a_wrong_envelope_are_refused():
    message = _rmsnorm()
    del message["result"]["grad_x"]
    _refused(message, "missing \\['grad_x'\\]")
    _refused({"ok": 1, "result": {}}, "expected a dict with \"ok\"")
    _refused({"ok": False, "error": {"kind": 3, "message": "", "line": None, "where": ""},
              "notes": [], "memory": None}, "error.kind: int, expected a str")


def test_notes_are_strings_clipped_on_receipt():
    _refused(dict(_rmsnorm(), notes=["fine", 12345]), "notes\\[1\\]: int, expected a str")
    got = _received(dict(_rmsnorm(), notes=[f"{index}" * 1000 for index in range(30)]))
    assert len(got["notes"]) == 20 and {len(note) for note in got["notes"]} == {500}
    error = {"kind": "K" * 10**4, "message": "E" * 10**5, "line": 7, "where": "W" * 10**4}
    got = _received({"ok": False, "error": error, "notes": [], "memory": None})["error"]
    assert (len(got["kind"]), len(got["message"]), len(got["where"])) == (100, 2000, 500)


def _doubling(depth: int, leaf="x"):
    level = [leaf]
    for _ in range(depth):
        level = [level, level]
    return level


def test_shared_structure_is_refused_at_once():
    start = time.monotonic()
    _refused(dict(_rmsnorm(), notes=[_doubling(60)] * 20), "notes\\[0\\]: list, expected a str")
    _refused(_rmsnorm(scale_shape=_doubling(60)), "same object|expected an integer")
    assert time.monotonic() - start < 2.0


def test_deep_nesting_and_object_floods_are_refused():
    deep = []
    for _ in range(100):
        deep = [deep]
    _refused(_rmsnorm(scale_shape=deep), "scale_shape\\[0\\]: list, expected an integer")
    deeper = b"\x80\x02" + b"]" * 20_000 + b"a" * 19_999 + b"."  # 20,000 nested lists
    with pytest.raises(MalformedReply, match="list, expected a dict"):
        validated(protocol.decode(_archive(deeper), bounded=True), Op.RMSNORM)
    losses = [1.0] * 1500
    reply = {"ok": True, "result": {"epoch_losses": [], "epoch_cpu_seconds": [],
                                    "step_losses": losses}, "notes": [], "memory": None}
    assert len(validated(reply, Op.CONVERGENCE_TRAIN)["result"]["step_losses"]) == 1500
    with pytest.raises(MalformedReply, match="more than 1000 objects"):
        validated(reply, Op.CONVERGENCE_TRAIN, max_objects=1000)


def _archive(pickled: bytes, compression=zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        archive.writestr("archive/data.pkl", pickled)
        archive.writestr("archive/version", "3\n")
    return buffer.getvalue()


def test_decoding_a_reply_is_bounded():
    level = ("x",)
    for _ in range(60):  # hashing it as a dict key would walk 2**60 tuples
        level = (level, level)
    bomb = pickle.dumps({"ok": True, "result": {"k": 1}, "key": level}, protocol=2)
    start = time.monotonic()
    for payload, match in [
        (_archive(bomb), "a tuple of more than"),
        (_archive(pickle.dumps(list(range(200_000)), protocol=2)), "above the"),
        (_archive(pickle.dumps([], protocol=2), zipfile.ZIP_DEFLATED), "compressed"),
        (pickle.dumps({"ok": True}, protocol=2), "not torch.save's archive"),
    ]:
        with pytest.raises(protocol.ProtocolError, match=match):
            protocol.decode(payload, bounded=True)
    assert time.monotonic() - start < 2.0
