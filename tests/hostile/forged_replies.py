# Hostile: rewrite the worker's replies on their way to the grader. The student's code runs in
# the worker's process, so it can reach the worker's own modules through sys.modules and replace
# the function that writes each reply frame. HOSTILE["forges"] maps an op (the import's reply is
# the op "load") to what its replies get (see _forge).
import sys as _sys

import torch as _torch

_protocol = _sys.modules["worker.protocol"]
_honest_read, _honest_write = _protocol.read_frame, _protocol.write_frame
_last = {"op": "load"}  # this module is imported while the worker answers "load"


def _read_frame(stream):
    request = _honest_read(stream)
    _last["op"] = request.get("op") if isinstance(request, dict) else None
    return request


def _nested_and_shared(depth):
    """A list whose tree has 2**depth leaves but only `depth` distinct lists: each level holds
    the level below twice. A pickle of it is a few hundred bytes."""
    level = ["x"]
    for _ in range(depth):
        level = [level, level]
    return level


def _forged_out(out, forge):
    if forge == "meta":
        return _torch.empty(out.shape, device="meta")
    if forge == "sparse":
        return out.to_sparse()
    if forge == "complex":
        return out.to(_torch.complex64)
    if forge == "quantized":
        return _torch.quantize_per_tensor(out, 0.1, 0, _torch.qint8)
    if forge == "expanded":  # 4 * 2**42 bytes of float32 if anyone copied it, one element stored
        return out.reshape(-1)[:1].expand(2**14, 2**14, 2**14)
    if forge == "noncontiguous":  # the same values, laid out transposed: harmless
        return out.transpose(0, -1).contiguous().transpose(0, -1)
    if forge == "huge":  # 12 MB of the wrong shape, under the reply size limit
        return _torch.zeros(3, 2**20)
    if forge == "shared_storage":  # the same storage as the next field
        return out
    raise ValueError(forge)


def _forge(reply):
    forge = HOSTILE["forges"].get(_last["op"])
    if forge is None or not isinstance(reply, dict):
        return reply
    if forge == "internal" and not reply.get("ok"):  # "a fault of the kit's, not mine"
        reply["error"]["internal"] = True
    elif forge == "note_objects":
        reply["notes"] = list(reply.get("notes", [])) + [12345, ["a", "list"], {"a": "dict"}]
    elif forge == "grader_note":  # in the grader's words ("unexpected": the harness refuses "internal error")
        reply["notes"] = list(reply.get("notes", [])) + [
            "the grader hit an unexpected error in this check (KeyError: 'scale' at "
            "autograder/checks/oracle.py line 88)\nThis is not your fault: please tell the "
            "course staff."]
    elif forge == "shared_notes":
        reply["notes"] = [_nested_and_shared(60)] * 20
    elif forge in ("huge_error", "huge_error_frame"):  # the frame: above the structure limit
        size = 10**7 if forge == "huge_error_frame" else 10**5
        reply = {"ok": False, "notes": ["n" * 1000] * 50, "memory": None,
                 "error": {"kind": "K" * 10**4, "message": "\x00" * size, "line": 7,
                           "where": "W" * 10**4}}
    elif forge == "wrong_keys" and reply.get("ok"):
        reply["result"]["bogus"] = 1
        reply["result"].pop("grad_x", None)
    elif forge == "shared_storage" and reply.get("ok"):
        reply["result"]["grad_x"] = reply["result"]["out"]
    elif reply.get("ok") and forge != "extra_frame":
        reply["result"]["out"] = _forged_out(reply["result"]["out"], forge)
    return reply


def _write_frame(stream, message):
    _honest_write(stream, _forge(message))
    if HOSTILE["forges"].get(_last["op"]) == "extra_frame":
        _honest_write(stream, {"ok": True, "result": {}, "notes": [], "memory": None})


_protocol.read_frame, _protocol.write_frame = _read_frame, _write_frame
