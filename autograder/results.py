"""results.json: Gradescope's schema, built, checked and written only by the trusted grader.

The write is atomic (a temporary file renamed over the target), so a reader never sees half a
file, and bounded: whatever a submission makes its replies say, the file written is at most
MAX_RESULTS_BYTES, every string in it cut (bounded()). `internal_error` is the document of a grading the grader itself could not do (its worker
could not start, a crash of the grader): it lists no test, so nothing is charged to the student,
and says why in `extra_data.internal_error`, which batch grading and the exit code go by.
"""

import base64
import hashlib
import html
import json
import os
import tempfile

from . import rubric

STATUSES = ("passed", "failed")
VISIBILITIES = ("hidden", "after_due_date", "after_published", "visible")
MAX_OUTPUT_CHARS = 8_000  # per test; Gradescope cuts whole outputs at 100,000 characters
MAX_RESULTS_BYTES = 1_000_000  # the whole results.json as written
EXTRA_CHARS = MAX_OUTPUT_CHARS  # a string in extra_data (the report keeps a test's text there)
EXTRA_ITEMS = 200  # a list's or dict's items in extra_data
EXTRA_DEPTH = 8  # nesting in extra_data
# Output formats. Every output is plain text ("test_output_format": "text") except the test that
# carries the figures: the convergence test gets "output_format": "html", its text in a <pre>
# and the loss curve and attention maps as <img> with base64 data: URIs (Gradescope renders a
# test's output in the format it names). Gradescope cuts an output at 100,000 characters, so
# the images get at most FIGURE_CHARS; when they do not fit, the output stays text and gets a
# one-line description of the loss curve instead.
OUTPUT_FORMATS = ("text", "html", "simple_format", "md", "ansi")
FIGURES_TEST = "test_convergence.py::test_heldout_loss"
FIGURE_CHARS = 60_000


CUT = "\n[... output cut by the grader]"


def _encoded(text: str) -> int:
    """The characters `text` takes in the JSON file (escapes included, without quotes)."""
    return len(json.dumps(text)) - 2


def clip(text: str, limit: int = MAX_OUTPUT_CHARS) -> str:
    """`text`, cut so that it takes at most `limit` characters in results.json (a control or
    non-ASCII character takes up to 6 there)."""
    if len(text) <= limit and _encoded(text) <= limit:
        return text
    cut = text[: limit - len(CUT)]
    while _encoded(cut) > limit - len(CUT):
        cut = cut[: len(cut) * (limit - len(CUT)) // _encoded(cut) - 1]
    return cut + CUT


def test_entry(rule: rubric.Rule, number: str, fraction: float, output: str,
               seconds: float = 0.0, extra: dict = None, attempted: bool = True) -> dict:
    """One test's entry. attempted=False: an optional check that found nothing to grade (no
    KV-cache path): never "passed", and extra_data["attempted"] = False, which the TA's report
    leaves out of pass rates."""
    fraction = min(max(fraction, 0.0), 1.0)
    extra = dict(extra or {}, **({} if attempted else {"attempted": False}))
    return {
        "name": rule.name,
        "number": number,
        "score": round(rule.weight * fraction, 4),
        "max_score": rule.weight,
        "status": "passed" if fraction >= 1.0 and attempted else "failed",
        "output": clip(output),
        "visibility": rule.visibility,
        "tags": [rule.category],
        "extra_data": {"seconds": round(seconds, 3), **extra},
    }


def attempted(test: dict) -> bool:
    """False for an optional check that found nothing to grade (test_entry's attempted=False):
    neither passed nor failed, left out of pass rates and of "every test passed"."""
    return test.get("extra_data", {}).get("attempted", True)


def numbers() -> dict:
    """'<category index>.<index within category>' for every rubric test, e.g. '3.2'."""
    result, counters = {}, {}
    for rule in rubric.RULES:
        category = rubric.CATEGORIES.index(rule.category) + 1
        counters[category] = counters.get(category, 0) + 1
        result[rule.test] = f"{category}.{counters[category]}"
    return result


def with_figures(entry: dict, images: dict, description: str) -> dict:
    """The test entry with the images {file name: PNG bytes} embedded, or their description."""
    tags = [f'<img alt="{html.escape(name)}" style="max-width:100%" '
            f'src="data:image/png;base64,{base64.b64encode(png).decode()}">'
            for name, png in images.items()]
    if tags and sum(map(len, tags)) <= FIGURE_CHARS:
        body = f"<pre>{html.escape(entry['output'])}</pre>" + "".join(f"<p>{tag}</p>" for tag in tags)
        # the text kept for the TA's report, which shows the full-size figures itself
        return dict(entry, output=body, output_format="html",
                    extra_data=dict(entry.get("extra_data") or {}, text=entry["output"]))
    if description:
        return dict(entry, output=clip(f"{entry['output']}\n{description}".strip()))
    return entry


def plain_output(entry: dict) -> str:
    """An entry's output as text, whatever its format (with_figures keeps the text)."""
    if entry.get("output_format") != "html":
        return entry.get("output", "")
    return str((entry.get("extra_data") or {}).get("text", ""))


def document(tests: list, output: str, execution_time: float) -> dict:
    return {
        "score": round(sum(test["score"] for test in tests), 4),
        "execution_time": round(execution_time, 2),
        "output": clip(output, 20_000),
        "output_format": "text",
        "test_output_format": "text",
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": tests,
    }


INTERNAL_ERROR = "internal error of the grader, not a problem with your code"


def internal_error(cause: str, execution_time: float = 0.0, details: str = "") -> dict:
    """A grading that did not happen. Gradescope needs a score, so it is 0, but no test is listed
    (none is failed in the student's name; Gradescope accepts `tests` empty when a top-level
    score is given); the output says so and gives the cause, for the course staff to regrade."""
    output = (f"NOT GRADED: {INTERNAL_ERROR}. Your submission could not be graded, so it shows "
              "0 for now; please tell the course staff, who will fix the grader and regrade it.\n"
              f"Cause (for the course staff): {cause}")
    result = document([], output + (f"\n{details}" if details else ""), execution_time)
    result["extra_data"] = {"internal_error": clip(cause, 4_000)}
    return result


def internal_error_of(results: dict) -> str:
    """The cause recorded in a document whose grading hit an internal error, else ""."""
    extra = results.get("extra_data") if isinstance(results, dict) else None
    return str(extra.get("internal_error") or "") if isinstance(extra, dict) else ""


def problems(results: dict) -> list:
    """Everything in `results` that breaks Gradescope's schema or this kit's contract."""
    found = []
    tests = results.get("tests")
    not_graded = tests == [] and bool(internal_error_of(results))  # see internal_error()
    if not_graded and results.get("score") != 0:
        found.append("an internal-error document must score 0")
    elif not isinstance(tests, list) or not (tests or not_graded):
        return ["`tests` must be a non-empty list"]
    for index, test in enumerate(tests):
        where = f"tests[{index}] ({test.get('name', '?')})"
        for key, kind in (("name", str), ("number", str), ("output", str), ("visibility", str),
                          ("status", str), ("score", (int, float)), ("max_score", (int, float)),
                          ("tags", list)):
            if not isinstance(test.get(key), kind):
                found.append(f"{where}: `{key}` missing or not {getattr(kind, '__name__', kind)}")
        if test.get("status") not in STATUSES:
            found.append(f"{where}: status {test.get('status')!r}")
        if test.get("output_format", "text") not in OUTPUT_FORMATS:
            found.append(f"{where}: output_format {test.get('output_format')!r}")
        if test.get("visibility") not in VISIBILITIES:
            found.append(f"{where}: visibility {test.get('visibility')!r}")
        tags = test.get("tags") or []
        if len(tags) != 1 or tags[0] not in rubric.CATEGORIES:
            found.append(f"{where}: needs exactly one category tag, has {tags}")
        if isinstance(test.get("score"), (int, float)) and isinstance(test.get("max_score"), (int, float)):
            if not 0 <= test["score"] <= test["max_score"]:
                found.append(f"{where}: score {test['score']} outside 0..{test['max_score']}")
    total = sum(test.get("max_score", 0) for test in tests if isinstance(test.get("max_score"), (int, float))
                and (test.get("tags") or [None])[0] not in rubric.BONUS_CATEGORIES)
    if not not_graded and abs(total - 100) > 1e-9:
        found.append(f"max scores sum to {total}, not 100 (bonus categories not counted)")
    if not isinstance(results.get("execution_time"), (int, float)):
        found.append("`execution_time` missing or not a number")
    if not isinstance(results.get("output"), str):
        found.append("`output` missing or not a string")
    return found


def by_category(tests: list) -> dict:
    """{category: (score, max score)} summed over `tests` (results.json entries), for the
    categories they hold, in the rubric's order: every per-category figure (the student's summary,
    summary.csv, the batch's table, the report) is read from here."""
    totals = {}
    for test in tests:
        (category,) = test["tags"]
        score, maximum = totals.get(category, (0, 0))
        totals[category] = (score + test["score"], maximum + test["max_score"])
    return {category: totals[category] for category in rubric.CATEGORIES if category in totals}


def extra_value(results: dict, key: str, default=None):
    """A number a check reported in its entry's extra_data (e.g. "kv_cache_speedup")."""
    return next((test["extra_data"][key] for test in results.get("tests", [])
                 if key in (test.get("extra_data") or {})), default)


def _clipped(value, chars: int, items: int, depth: int = 0):
    """A copy of `value` (JSON data) with every string cut to `chars` (clip), every list and
    dict to `items` items, nesting to EXTRA_DEPTH; anything else by its type's name."""
    if isinstance(value, str):
        return clip(value, chars)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if depth >= EXTRA_DEPTH or not isinstance(value, (dict, list, tuple)):
        return f"[{type(value).__name__} cut by the grader]"
    if isinstance(value, dict):
        return {clip(str(key), 200): _clipped(item, chars, items, depth + 1)
                for key, item in list(value.items())[:items]}
    kept = [_clipped(item, chars, items, depth + 1) for item in value[:items]]
    return kept + ([f"[... {len(value) - items} more cut by the grader]"] if len(value) > items else [])


def _size(results: dict) -> int:
    return len(json.dumps(results, indent=2))


def bounded(results: dict) -> dict:
    """`results` within MAX_RESULTS_BYTES as write() writes it: every output and extra_data
    string cut (clip); if that is still too large, each test's extra_data is cut harder, then
    dropped (the top level keeps its own, cut). Gradescope cuts a test's output at 100,000
    characters: an html output (the figures) may use them."""
    results = dict(results, output=clip(str(results.get("output", "")), 20_000))
    tests = [dict(test, name=clip(str(test.get("name", "")), 500),
                  output=clip(str(test.get("output", "")),
                              100_000 if test.get("output_format") == "html" else MAX_OUTPUT_CHARS))
             for test in results.get("tests", [])]
    results["tests"] = tests
    for chars, items in ((EXTRA_CHARS, EXTRA_ITEMS), (300, 10), (None, 10)):
        for test in tests:
            if "extra_data" in test:
                if chars is None:
                    del test["extra_data"]
                else:
                    test["extra_data"] = _clipped(test["extra_data"], chars, items)
        if "extra_data" in results:
            results["extra_data"] = _clipped(results["extra_data"], chars or 300, items)
        if _size(results) <= MAX_RESULTS_BYTES:
            break
    return results


def write(results: dict, path: str) -> dict:
    """Write `results` to `path`, bounded (bounded()); returns what it wrote."""
    results = bounded(results)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".results-", suffix=".json")
    with os.fdopen(handle, "w") as file:
        json.dump(results, file, indent=2)
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)
    return results


# extra_data key: the SHA-256 of the backbone.py graded (16 hex digits), so the TA's regrade
# ledger (ta/ledger.py) can tell a changed submission from a changed kit.
SUBMISSION_HASH = "submission_sha256"


def file_sha256(path: str) -> str:
    """16 hex digits of the SHA-256 of the file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]
