"""The worker's ops are named and documented alike (issue 11): the handler of op `x` is run_x,
every protocol.Op has one, and each docstring says what the reply holds."""

from autograder.worker import ops  # noqa: F401  (registers the ops)
from autograder.worker.protocol import Op
from autograder.worker.session import OPS


def test_every_op_is_run_its_name_and_documents_its_reply():
    assert set(OPS) == {value for name, value in vars(Op).items() if name.isupper()}
    for name, function in OPS.items():
        assert function.__name__ == f"run_{name}", (name, function.__name__)
        doc = function.__doc__ or ""
        assert "Returns" in doc and "{" in doc, (name, doc)
