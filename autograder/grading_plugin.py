"""The pytest plugin that turns the graded tests' outcomes into results.json entries.

Each collected test is matched to its rubric rule (weight, category, visibility, timeout); a
test missing from the rubric, or a rule with no test, stops grading with an error, so the two
cannot drift. A failure is kept as a Verdict (verdict.py): the check's own, or one built here for
an exception, a timeout or an internal error. A test's output is its verdicts' text (written for
the student), then the checks' own notes, then, last and under their own label, the notes the
worker's replies carried (REPORTED: claims of the submission's process, such as the adaptations
the worker made, each on one indented line, so that no text of theirs reads as the grader's);
the verdicts themselves go into the entry's extra_data["verdicts"] for the TA's reports.
"""

import os
import traceback
from dataclasses import dataclass, field

import pytest

from . import results, rubric
from .checks import margin
from .verdict import WORKER_FAILURE_KINDS, Failed, Verdict, from_message
from .sandbox.errors import StudentError, WorkerFailure, WorkerStartError

CONTEXT = pytest.StashKey()  # the grading context (submission handle, intake, ...) for conftest
CREDIT = pytest.StashKey()  # a test's partial credit, set through the `credit` fixture
EXTRA = pytest.StashKey()  # numbers a test reports for TAs (its entry's extra_data), via `extra`


class RubricMismatch(Exception):
    pass


@dataclass
class Credit:
    """Partial credit: a check calls set(fraction) and may still fail with its message."""

    fraction: float = None

    def set(self, fraction: float) -> None:
        self.fraction = fraction


@dataclass
class Outcome:
    """One rubric test; a parametrized check runs several cases and passes only if all do."""

    rule: rubric.Rule
    runs: int = 0
    seconds: float = 0.0  # wall time of setup, call and teardown, summed over cases
    failures: list = field(default_factory=list)  # Verdicts, without repeats
    notes: list = field(default_factory=list)  # the checks' own
    reported: list = field(default_factory=list)  # the worker's replies' (see the module docstring)
    fraction: float = None
    skipped: str = ""  # why an optional check had nothing to grade (pytest.skip)
    extra: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.runs > 0 and not self.failures


def _rule_key(item) -> str:
    return f"{item.path.name}::{item.originalname}"


class ResultsPlugin:
    def __init__(self, context, categories=None):
        """categories: grade only these (a TA's re-run of one part); None grades everything."""
        self.context = context
        self.categories = set(categories or rubric.CATEGORIES)
        self.outcomes = {rule.test: Outcome(rule) for rule in rubric.RULES}
        self.internal_errors = []  # (test name, traceback) for each failure of the grader itself

    def pytest_configure(self, config):
        config.stash[CONTEXT] = self.context

    def pytest_collection_modifyitems(self, session, config, items):
        collected = {_rule_key(item) for item in items}
        unknown = sorted(collected - set(self.outcomes))
        missing = sorted(set(self.outcomes) - collected)
        if unknown or missing:
            raise RubricMismatch(f"tests without a rubric rule: {unknown}; rules without a test: {missing}")
        skipped = [item for item in items if self.outcomes[_rule_key(item)].rule.category not in self.categories]
        if skipped:
            items[:] = [item for item in items if item not in skipped]
            config.hook.pytest_deselected(items=skipped)
            self.outcomes = {test: outcome for test, outcome in self.outcomes.items()
                             if outcome.rule.category in self.categories}
        order = [rule.test for rule in rubric.RULES]
        items.sort(key=lambda item: order.index(_rule_key(item)))
        for item in items:
            # A backstop for the grader itself (pytest-timeout's thread method ends the
            # process): the worker's own limits (a restart's import, then the check's
            # time) always fire first.
            rule = self.outcomes[_rule_key(item)].rule
            item.add_marker(pytest.mark.timeout(rule.timeout + rubric.WORKER.import_timeout + 120))

    def pytest_runtest_setup(self, item):
        rule = self.outcomes[_rule_key(item)].rule
        self.context.submission.begin_test(rule)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        report = (yield).get_result()
        outcome = self.outcomes[_rule_key(item)]
        outcome.seconds += report.duration
        if report.when == "call" and report.skipped:
            outcome.runs += 1
            outcome.skipped = str(getattr(call.excinfo.value, "msg", "")) or "nothing to check"
        elif report.when == "call" or (report.when == "setup" and not report.passed):
            outcome.runs += 1
            if not report.passed:
                verdict = (self._verdict(item, call.excinfo) if call.excinfo
                           else Verdict(measured="the check failed", kind="internal"))
                if verdict not in outcome.failures:
                    outcome.failures.append(verdict)
                # The run's log shows the verdict, not pytest's traceback: a student's error
                # needs none, and the grader's own is printed once, by cli.grade.
                report.longrepr = verdict.text()
        if report.when == "teardown":
            self.context.graded[outcome.rule.test] = outcome.passed
            notes = self.context.submission.end_test()
            outcome.notes.extend(n for n in notes.own if n not in outcome.notes)
            outcome.reported.extend(n for n in notes.reported if n not in outcome.reported)
            credit = item.stash.get(CREDIT, None)
            if credit is not None and credit.fraction is not None:
                outcome.fraction = credit.fraction
            reported = item.stash.get(EXTRA, {})
            tightest = margin.tighter(outcome.extra.get(margin.KEY), reported.get(margin.KEY))
            outcome.extra.update(reported, **({margin.KEY: tightest} if tightest else {}))

    def _verdict(self, item, excinfo) -> Verdict:
        error = excinfo.value
        if isinstance(error, Failed):
            return error.verdict
        if isinstance(error, StudentError):
            return Verdict(measured=f"the submission's code raised {error}", kind="raised")
        if isinstance(error, WorkerFailure):
            return Verdict(measured=str(error), kind=WORKER_FAILURE_KINDS.get(error.kind, "crashed"))
        if isinstance(error, WorkerStartError):  # the whole run becomes an internal error (cli.grade)
            return Verdict(measured=f"not graded: {results.INTERNAL_ERROR} ({error})", kind="internal")
        if excinfo.typename == "Failed" and "Timeout" in str(error):
            return Verdict(measured=f"the check did not finish in time ({error})", kind="timeout")
        if isinstance(error, pytest.fail.Exception):
            return from_message(str(error.msg))
        name = self.outcomes[_rule_key(item)].rule.name
        details = f"{item.nodeid}:\n{_traceback(error)}"
        if (name, details) not in self.internal_errors:
            self.internal_errors.append((name, details))
        return Verdict(measured=f"the grader hit an internal error in this check "
                                f"({type(error).__name__}: {error})",
                       hint="This is not your fault: please tell the course staff.", kind="internal")

    def entries(self) -> list:
        numbering = results.numbers()
        tests = []
        for test, outcome in self.outcomes.items():
            if outcome.fraction is not None:
                fraction = outcome.fraction
            elif outcome.skipped:  # an optional check with nothing to grade: not attempted
                fraction = 0.0
            else:
                fraction = 1.0 if outcome.passed else 0.0
            lines = [] if outcome.runs else ["this check did not run"]
            lines.extend(verdict.text() for verdict in outcome.failures)
            lines.extend([outcome.skipped] if outcome.skipped else [])
            lines.extend(outcome.notes)
            lines.extend(reported_lines(outcome.reported))
            extra = dict(outcome.extra, verdicts=[v.as_dict() for v in outcome.failures])
            tests.append(results.test_entry(outcome.rule, numbering[test], fraction,
                                            "\n".join(lines), outcome.seconds, extra,
                                            attempted=not outcome.skipped))
        return tests


REPORTED = ("Reported by your code's process (notes of the worker that ran your code; the "
            "grader did not check them):")
REPORTED_PREFIX = "  | "


def reported_lines(notes: list) -> list:
    """The worker's notes as a test's output shows them: under REPORTED, each on one line
    (line breaks and other unprintable characters made spaces) after REPORTED_PREFIX."""
    if not notes:
        return []
    return [REPORTED] + [REPORTED_PREFIX + " ".join("".join(
        c if c.isprintable() else " " for c in note).split()) for note in notes]


CHECKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "checks")


def _traceback(error: BaseException) -> str:
    """One traceback, the error's own, from the check's frame down (pytest's frames above it
    say nothing about the bug); the exception it was raised while handling, if any, in one line
    instead of Python's second traceback ("During handling of the above exception")."""
    frames = error.__traceback__
    while frames is not None and not frames.tb_frame.f_code.co_filename.startswith(CHECKS):
        frames = frames.tb_next
    text = "".join(traceback.format_exception(type(error), error, frames or error.__traceback__,
                                              chain=False))
    context = error.__cause__ or error.__context__
    if context is not None:
        text += f"(raised while handling {type(context).__name__}: {context})\n"
    return text
