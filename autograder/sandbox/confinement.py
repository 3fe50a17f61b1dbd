"""The worker's own confinement (worker/confine/: a seccomp filter against the network, Landlock
for its view of the filesystem), judged from what its preflight measured: checked, not assumed.

Before a fresh worker's preflight the grader plants a world-readable file holding a random token
in /tmp, where other gradings' sandbox folders live; the preflight tries to read it and to open a
socket of each network family, before anything of the student's has run. The view held when the
token did not come back; the network is blocked when every family was refused.
"""

import contextlib
import os
import secrets
import tempfile
from dataclasses import dataclass

REFUSED = ("EACCES", "EPERM")  # what a policy answers (the filter's EACCES, a missing privilege)


@dataclass
class Planted:
    path: str
    token: str


@contextlib.contextmanager
def planted_file():
    """A file in /tmp that every user may read, holding a fresh token; removed afterwards. Where
    /tmp cannot be written, its path is "" (nothing to read: the view is reported unchecked)."""
    token = f"scratch1-planted-{secrets.token_hex(8)}"
    try:
        folder = tempfile.mkdtemp(prefix="scratch1-planted-", dir="/tmp")
    except OSError:
        yield Planted("", token)
        return
    path = os.path.join(folder, "notes.txt")
    try:
        os.chmod(folder, 0o755)
        with open(path, "w") as file:
            file.write(token)
        os.chmod(path, 0o644)
        yield Planted(path, token)
    finally:
        with contextlib.suppress(OSError):
            os.remove(path)
        with contextlib.suppress(OSError):
            os.rmdir(folder)


@dataclass
class Judged:
    network_blocked: bool  # every family's socket() refused (EACCES/EPERM)
    network_evidence: str  # each family's outcome, e.g. "AF_INET EACCES, AF_INET6 EACCES"
    seccomp_problem: str  # "" when the worker's filter was installed, else why not
    view_restricted: bool  # the planted file's token did not come back
    view_evidence: str  # what reading it gave, e.g. "EACCES" or "ENOENT" or "read"
    landlock_problem: str  # "" when Landlock was applied, else why not
    landlock_abi: int  # the kernel's Landlock ABI version, 0 without one
    ipc_problem: str = "no report"  # "" when the filter refusing SysV IPC was installed, else why not


def judge(report, planted: Planted) -> Judged:
    """The grader's reading of the preflight's confinement report (probe.report): numbers and
    error names only, never the worker's own conclusion."""
    report = report if isinstance(report, dict) else {}
    installed = report.get("installed") if isinstance(report.get("installed"), dict) else {}
    found = report.get("sockets") if isinstance(report.get("sockets"), dict) else {}
    outcomes = {str(name): str(outcome) for name, outcome in found.items()}
    text = str(report.get("planted", ""))
    read = planted.token in text
    abi = report.get("landlock_abi")
    return Judged(
        network_blocked=bool(outcomes) and all(outcome in REFUSED for outcome in outcomes.values()),
        network_evidence=", ".join(f"{name} {outcome}" for name, outcome in outcomes.items()) or "no report",
        seccomp_problem=str(installed.get("network", "no report")),
        view_restricted=not read and text.startswith("error: "),
        view_evidence="read" if read else text.removeprefix("error: ") or "no report",
        landlock_problem=str(installed.get("view", "no report")),
        landlock_abi=abi if isinstance(abi, int) and not isinstance(abi, bool) else 0,
        ipc_problem=str(installed.get("ipc", "no report")),
    )


def network_sentence(judged: Judged) -> str:
    """What blocked the network without namespaces, or why it is open, for the report."""
    if judged.network_blocked:
        return ("network blocked by a seccomp filter the worker installs on itself before the "
                "submission is imported: socket() refused for every family but AF_UNIX (checked "
                f"in its preflight: {judged.network_evidence})")
    why = judged.seccomp_problem or "installed, but sockets were not refused"
    return f"network NOT blocked (namespaces refused by the platform; seccomp filter: {why}; checked: {judged.network_evidence})"


def view_sentence(judged: Judged) -> str:
    """What limited the worker's view of the filesystem without bubblewrap, or why nothing did."""
    if judged.view_restricted and not judged.landlock_problem:
        return (f"the rest of the filesystem hidden by Landlock (ABI {judged.landlock_abi}): the "
                "worker reads only the interpreter and its libraries, the system's, /proc, /sys, "
                "/dev and its sandbox folder, and writes only its work folder (checked: a "
                f"world-readable file planted in /tmp was refused: {judged.view_evidence})")
    why = judged.landlock_problem or "applied, but the planted file was read"
    return (f"the rest of the filesystem (/tmp, /home...) readable where its permissions allow "
            f"(Landlock: {why}; checked: a world-readable file planted in /tmp: {judged.view_evidence})")
