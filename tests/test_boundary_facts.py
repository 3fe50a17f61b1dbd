"""Facts both sides of the sandbox state come from one definition (worker/protocol.py, which
the worker holds too): each end's frame size limit, and the memory limit's sentence."""

import dataclasses
import struct

import pytest

from autograder import rubric
from autograder.sandbox.limits import Limits
from autograder.worker import protocol, session

MB = 2**20


def test_each_end_refuses_a_frame_above_its_own_limit():
    header = struct.pack(">Q", rubric.WORKER.reply_bytes + 1)
    with pytest.raises(protocol.ProtocolError, match=f"above the {rubric.WORKER.reply_bytes // MB} MB limit"):
        protocol.decode_length(header, rubric.WORKER.reply_bytes)  # the grader, reading a reply
    assert protocol.decode_length(header, protocol.MAX_REQUEST_BYTES) == rubric.WORKER.reply_bytes + 1


def test_the_worker_and_the_grader_state_the_memory_limit_in_the_same_words(monkeypatch):
    limit = 432 * MB
    monkeypatch.setattr(session.resource, "getrlimit", lambda _resource: (limit, limit))
    worker_says = session.describe_error(MemoryError("cannot allocate"))["message"]
    fields = {field.name: 0 for field in dataclasses.fields(Limits) if field.default is dataclasses.MISSING}
    grader_says = Limits(**dict(fields, memory_bytes=limit)).memory_text()
    assert f"[{grader_says}]" in worker_says and "432 MB" in grader_says
