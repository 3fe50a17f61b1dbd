"""Fixtures of the graded tests: the submission handle, the reference oracle and seeded generators."""

import zlib

import pytest
import torch

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
def generator(request) -> torch.Generator:
    """A generator seeded from the test's name: the same inputs on every run, different per test."""
    return torch.Generator().manual_seed(zlib.crc32(request.node.name.encode()))


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
