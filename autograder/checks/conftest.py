"""Fixtures of the graded tests: the submission handle, the reference oracle and the generators
of each test's inputs, drawn from the grading's secret (grading_seed.py)."""

import pytest
import torch

from .. import grading_seed
from ..grading_plugin import CONTEXT, CREDIT, EXTRA, Credit
from . import oracle


@pytest.fixture
def submission(pytestconfig):
    """The submission, reached only through the worker (see submission.py)."""
    return pytestconfig.stash[CONTEXT].submission


@pytest.fixture
def context(pytestconfig):
    return pytestconfig.stash[CONTEXT]


@pytest.fixture(scope="session")
def reference():
    """The reference solution, imported on the trusted side only."""
    return oracle.reference()


@pytest.fixture
def generator(request, context) -> torch.Generator:
    """The test's own generator, its whole state derived from the grading's secret and the test's
    name: new inputs at every grading, that no input sent earlier predicts (grading_seed.py), and
    the same again when a TA repeats the grading with its seed."""
    return grading_seed.generator(context.seed, request.node.nodeid)


@pytest.fixture
def credit(request) -> Credit:
    """Partial credit for the running test: credit.set(fraction)."""
    request.node.stash[CREDIT] = Credit()
    return request.node.stash[CREDIT]


@pytest.fixture
def extra(request) -> dict:
    """Numbers the running test reports for TAs (its results entry's extra_data)."""
    request.node.stash[EXTRA] = {}
    return request.node.stash[EXTRA]
