"""Similarity across a class, measured by copydetect with the template and the reference excluded.

    OUT/similarity.csv            every pair of submissions with any shared code, most similar
                                  first: both similarities, the shared tokens, flagged or not
    OUT/report/similarity.html    the most similar pairs, and each submission's share of the
                                  reference solution
    OUT/report/pairs/<a>--<b>.html the matching regions of one pair, side by side

copydetect (MOSS-style winnowing of token k-grams, https://github.com/blingenf/copydetect) is
a TA-only extra: `.venv/bin/pip install -r requirements-ta.txt`. Without it the batch runs as
before and the page says how to install it.

Every submission shares the template's provided code, and every correct one much of the
reference's structure (the course's own code for the same TODOs: `x.pow(2).mean(-1, keepdim=True)`,
`q @ k.transpose(-2, -1) / math.sqrt(head_dim)`): both are copydetect boilerplate, so only code
the student wrote differently from both counts. A pair's similarity is the smaller of its two
shares (the part of each file's own code found in the other), so a short file fully contained
in a long one is not a match by itself. copydetect replaces every name by one letter, so a copy
with renamed variables still matches.

Measured on the kit's 34 correct versions (the reference, its correct alternatives and API
variants in tests/variants.py, each the reference with one part rewritten), with the template
and the reference excluded: the most similar two score 0.63 (both register a torch.tril causal
mask buffer, nanoGPT's idiom, and slice it the same way), the next 0.62 and 0.42, and 557 of
the 561 pairs stay under 0.35; two copies of one file score 1.0. FLAGGED sits between. With only
the template excluded, 328 of those 561 pairs would be flagged (median 0.78), as they share the
reference's code (tests/test_ta_similarity.py). A student who hands in the reference itself shares none of
their own code with anyone: the page's `reference share` column (the part of the file, template
excluded, that matches the reference) shows that instead.
"""

import csv
import html
import io
import itertools
import os
import urllib.parse
from dataclasses import dataclass

from .. import intake, kit_version
from . import html_report

INSTALL = ".venv/bin/pip install -r requirements-ta.txt"
TEMPLATE = os.path.join(kit_version.KIT, "student", "backbone.py")
REFERENCE = os.path.join(kit_version.KIT, "reference", "backbone.py")
NOISE = 25  # tokens in a k-gram: copydetect's default noise threshold, as MOSS's k
WINDOW = 1  # winnowing window: every k-gram kept (classes are small; exact regions)
FLAGGED = 0.75  # a pair whose smaller share reaches this is flagged for the TA to read (see above)
HEADER = ["first", "second", "similarity", "first share", "second share", "shared tokens", "flagged"]


@dataclass
class Pair:
    first: object  # batch.Submission
    second: object
    similarity: float  # min of the two shares
    shares: tuple  # (part of first's own code found in second, and the reverse)
    tokens: int  # tokens of first's code in the shared regions
    slices: tuple  # copydetect's character slices (2xN arrays) into each file's code

    @property
    def flagged(self) -> bool:
        return self.similarity >= FLAGGED


@dataclass
class Measured:
    """What `measure` found: `pairs` most similar first, `reference_share` {name: share} of each
    file's own code (template excluded) matching the reference; `missing` says why nothing was
    measured ("" when it was); `codes` {name: the submitted code}."""
    pairs: list
    reference_share: dict
    codes: dict
    missing: str = ""


def available() -> str:
    """"" when copydetect can be imported, else what to do about it."""
    try:
        import copydetect  # noqa: F401
    except ImportError:
        return f"copydetect is not installed (a TA-only extra): {INSTALL}"
    return ""


def _code(submission) -> str:
    found = intake.locate(submission.path)
    try:
        if not found.file:
            return ""
        with open(found.file, "rb") as file:
            return file.read(intake.MAX_SOURCE_BYTES).decode("utf-8", "replace")
    except OSError:
        return ""
    finally:
        found.cleanup()


def _fingerprint(code: str, boilerplate):
    from copydetect import CodeFingerprint
    return CodeFingerprint("backbone.py", NOISE, WINDOW, boilerplate, fp=io.StringIO(code))


def _boilerplate(paths) -> list:
    hashes = set()
    for path in paths:
        with open(path, encoding="utf-8") as file:
            hashes |= set(_fingerprint(file.read(), None).hashes)
    return sorted(hashes)


def measure(submissions: list) -> Measured:
    """Compare every pair of the graded submissions' code."""
    missing = available()
    if missing:
        return Measured([], {}, {}, missing)
    from copydetect import compare_files
    codes = {s.name: _code(s) for s in submissions if s.document}
    by_name = {s.name: s for s in submissions}
    template = _boilerplate([TEMPLATE])
    own = sorted(set(template) | set(_boilerplate([REFERENCE])))
    prints = {name: _fingerprint(code, own) for name, code in codes.items() if code}
    with open(REFERENCE, encoding="utf-8") as file:
        reference = _fingerprint(file.read(), template)
    reference_share = {}
    for name, code in codes.items():
        mine = _fingerprint(code, template) if code else None
        reference_share[name] = compare_files(mine, reference)[1][0] if mine and mine.token_coverage else 0.0
    pairs = []
    for a, b in itertools.combinations(sorted(prints), 2):
        if not (prints[a].token_coverage and prints[b].token_coverage):
            continue
        tokens, shares, slices = compare_files(prints[a], prints[b])
        if tokens:
            pairs.append(Pair(by_name[a], by_name[b], float(min(shares)), tuple(map(float, shares)),
                              int(tokens), slices))
    pairs.sort(key=lambda p: (-p.similarity, -p.tokens, p.first.name, p.second.name))
    return Measured(pairs, reference_share, codes)


def write(measured: Measured, path: str) -> None:
    """similarity.csv (HEADER), or nothing when copydetect is missing (the batch says so)."""
    if measured.missing:
        return
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(HEADER)
        for pair in measured.pairs:
            writer.writerow([pair.first.name, pair.second.name, f"{pair.similarity:.3f}",
                             f"{pair.shares[0]:.3f}", f"{pair.shares[1]:.3f}", pair.tokens,
                             "yes" if pair.flagged else ""])


def pair_file(pair: Pair) -> str:
    return f"pairs/{pair.first.name}--{pair.second.name}.html"


def _highlighted(code: str, slices, context: int = 3) -> str:
    """The code escaped, its shared regions marked, line-numbered; lines farther than `context`
    from a marked one are folded into a count."""
    marks = sorted(zip(slices[0].tolist(), slices[1].tolist())) if len(slices) and len(slices[0]) else []
    # copydetect 0.5.0 can map a region at the very start back to an end before its start: such a
    # region cannot be placed in the code, and is left unmarked
    marks = [(start, end) for start, end in marks if end > start]
    parts, position = [], 0
    for start, end in marks:
        parts.append(html.escape(code[position:max(start, position)]))
        parts.append(f"<mark>{html.escape(code[max(start, position):end])}</mark>")
        position = max(end, position)
    parts.append(html.escape(code[position:]))
    lines, marked, open_mark = [], [], False
    for line in "".join(parts).split("\n"):
        # a mark spanning lines is closed and reopened on each, so every line stays one block
        text = ("<mark>" if open_mark else "") + line
        marked.append(open_mark or "<mark>" in line)
        open_mark = text.count("<mark>") > text.count("</mark>")
        lines.append(text + "</mark>" * open_mark)
    near = [any(marked[max(0, i - context):i + context + 1]) for i in range(len(lines))]
    out, folded = [], 0
    for number, (text, shown) in enumerate(zip(lines, near), 1):
        if not shown:
            folded += 1
            continue
        if folded:
            out.append(f"<span class='line muted'>   \u22ef {folded} line{'s' * (folded != 1)}</span>")
            folded = 0
        out.append(f"<span class=line><span class=ln>{number}</span>{text}</span>")
    if folded:
        out.append(f"<span class='line muted'>   \u22ef {folded} line{'s' * (folded != 1)}</span>")
    return "".join(out)


def pair_page(pair: Pair, codes: dict) -> str:
    """The body of one pair's page: both files side by side, the shared regions marked."""
    columns = "".join(
        f"<div><h2>{html.escape(s.name)} <span class=muted>({share:.0%} of its own code found in "
        f"the other)</span></h2><pre class=code>{_highlighted(codes[s.name], slices)}</pre></div>"
        for s, share, slices in zip((pair.first, pair.second), pair.shares, pair.slices))
    return ('<p><a href="../similarity.html">&larr; similarity</a></p>'
            f"<h1>{html.escape(pair.first.name)} and {html.escape(pair.second.name)}: "
            f"{pair.similarity:.0%} similar</h1><p class=muted>Marked: code shared by both files that is "
            "neither the template's nor the reference's (copydetect, k-grams of "
            f"{NOISE} tokens).</p><div class=sidebyside>{columns}</div>")


def page(measured: Measured, shown: int = 30) -> str:
    """The body of report/similarity.html."""
    head = ('<p><a href="index.html">&larr; class overview</a></p><h1>Similarity</h1>')
    if measured.missing:
        return head + f"<p class=failed>Not measured: {html.escape(measured.missing)}</p>"
    flagged = [p for p in measured.pairs if p.flagged]
    rows = [[f'<a href="{urllib.parse.quote(pair_file(p))}">{html.escape(p.first.name)} &harr; '
             f'{html.escape(p.second.name)}</a>', (f"{p.similarity:.0%}", f"{p.similarity:.4f}"),
             f"{p.shares[0]:.0%} / {p.shares[1]:.0%}", str(p.tokens),
             "<b class=failed>flagged</b>" if p.flagged else ""] for p in measured.pairs[:shown]]
    shares = sorted(measured.reference_share.items(), key=lambda item: (-item[1], item[0]))
    return (head + "<p class=muted>copydetect's winnowed fingerprints of each submission's "
            "backbone.py, with the template's code and the reference's excluded as boilerplate "
            "(what every correct answer shares), so a pair's similarity is code its two authors "
            f"wrote alike on their own. Similarity: the smaller of the two shares. Flagged: at "
            f"least {FLAGGED:.0%}; read the pair before concluding anything.</p>"
            f"<p><b>{len(flagged)} flagged pair{'s' * (len(flagged) != 1)}</b> of "
            f"{len(measured.codes) * (len(measured.codes) - 1) // 2} compared; "
            f"{len(measured.pairs)} share any code.</p>"
            + html_report.table(["pair (side by side)", "similarity", "shares", "shared tokens", ""],
                                rows, {1, 2, 3}, sortable=True)
            + "<h2>Share of the reference solution</h2><p class=muted>The part of each file's code "
              "(template excluded) that matches the reference's: near 100% is the reference "
              "itself or a copy of it, which the pairs above cannot show.</p>"
            + html_report.table(["submission", "reference share"],
                                [[html.escape(n), (f"{v:.0%}", f"{v:.4f}")] for n, v in shares],
                                {1}, sortable=True))


def write_pages(measured: Measured, report: str, shown: int = 30) -> None:
    """report/similarity.html and a page per shown pair."""
    html_report.write_page(os.path.join(report, "similarity.html"), "Similarity", page(measured, shown),
                           script=True)
    for pair in measured.pairs[:shown]:
        html_report.write_page(os.path.join(report, pair_file(pair)),
                               f"{pair.first.name} and {pair.second.name}", pair_page(pair, measured.codes))
