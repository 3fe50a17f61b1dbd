"""Whether an exception raised while an op ran looks like the kit's own: the worker's report,
not the verdict.

The session flags such an error "internal": True with the kit's line, so the TA sees where the
kit's worker code failed. The grader does not take the flag as proof (the submission's code runs
in this process and could set it): it fails the check in the submission's name and keeps the
claim for the TA (checks/submission.py); the install's self-test, grading the reference in the
real sandbox, is what proves the kit's worker code. An error is the student's when any of these
holds:

1. it is one of the adapter's deliberate "your code does not fit the template's API" errors,
   marked with does_not_fit() (or a class attribute `does_not_fit = True`);
2. its traceback passes through the submission (a frame in backbone.py): the student's code
   raised, or a kit callback it called (the training spy, the template's RoPE) did;
3. it was raised inside torch or another library, which raise on what they are given: a
   student module whose forward takes other arguments (nn.Module.__call__), a tensor of the
   wrong shape;
4. it was raised at a line of the kit by torch's compiled code on a value the student's code
   produced, or by the student's code filling memory: a RuntimeError, IndexError, ValueError
   or MemoryError (multiplying a wrong-shape output, indexing logits of the wrong rank);
   or it is an AttributeError on one of the submission's own objects.

Anything else was raised by the kit's own lines and is internal: a NameError, KeyError,
TypeError (a kit function called with arguments it does not take), an AttributeError on a kit
or torch object, a BadRequest. So the kit raises on purpose only misfits and BadRequest, and a
kit bug that makes torch raise a RuntimeError at a kit line is still reported as the student's
(the reference scoring 100 in the kit's own tests is what catches those).
"""

import os
import traceback
import types

KIT_DIRECTORY = os.path.dirname(os.path.abspath(__file__))
SUBMISSION_MODULE = "backbone"

# What torch's compiled code raises on a tensor of the wrong shape, rank or dtype (c10::Error,
# IndexError, ValueError), and what the student's code filling memory raises anywhere.
RAISED_ON_A_WRONG_VALUE = (RuntimeError, IndexError, ValueError, MemoryError)


def does_not_fit(error: BaseException) -> BaseException:
    """`error`, marked as the adapter's deliberate report that the submission does not fit the
    call the template makes (the student's, whatever line raised it). For `raise
    does_not_fit(TypeError(...))`."""
    error.does_not_fit = True
    return error


def _in_submission(frame) -> bool:
    return os.path.basename(frame.filename) == f"{SUBMISSION_MODULE}.py"


def _in_kit(frame) -> bool:
    return os.path.abspath(frame.filename).startswith(KIT_DIRECTORY + os.sep)


def _of_submission(value) -> bool:
    """Whether `value` is the submission's module, one of its classes or an instance of one
    (read off the type, so no code of the student's runs)."""
    if isinstance(value, types.ModuleType):
        return value.__name__ == SUBMISSION_MODULE
    owner = value if isinstance(value, type) else type(value)
    return vars(owner).get("__module__") == SUBMISSION_MODULE


def is_internal(error: BaseException) -> bool:
    """Whether `error`, raised while an op ran, is the kit's own (see the module's rules)."""
    if getattr(error, "does_not_fit", False):
        return False
    frames = traceback.extract_tb(error.__traceback__)
    if not frames or any(_in_submission(frame) for frame in frames) or not _in_kit(frames[-1]):
        return False
    if isinstance(error, RAISED_ON_A_WRONG_VALUE):
        return False
    return not (isinstance(error, AttributeError) and _of_submission(getattr(error, "obj", None)))


def kit_location(error: BaseException) -> str:
    """'ops/rmsnorm.py line 17 in run_rmsnorm: <code>', where the kit's code raised `error`."""
    frames = [frame for frame in traceback.extract_tb(error.__traceback__) if _in_kit(frame)]
    if not frames:
        return ""
    frame = frames[-1]
    path = os.path.relpath(frame.filename, KIT_DIRECTORY)
    return f"worker/{path} line {frame.lineno} in {frame.name}: {(frame.line or '').strip()}"
