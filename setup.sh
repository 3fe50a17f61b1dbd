#!/usr/bin/env bash
# Scratch-1 autograder kit: install dependencies and prepare the grader. Idempotent.
#
# Two modes:
#   Gradescope mode: running as root with the kit at /autograder/source (Gradescope's image
#     build), or SCRATCH1_GRADESCOPE=1. Installs requirements.txt into the system python3
#     (3.10 on Ubuntu 22.04) and locks /autograder/source and /autograder/results away from every
#     user but root. No worker user is created: each grading's worker runs under a uid and gid
#     of its own, drawn for that grading (autograder/sandbox/identity.py), which owns nothing.
#   Local mode: everything else (a TA's machine, CI). Creates .venv/ next to this script and
#     installs requirements.txt into it; pip is skipped while .venv/.requirements.sha256
#     matches requirements.txt. As root, local runs drop privileges the same way.
# In both modes torch is the CPU build, pinned as torch==X+cpu in requirements.txt and taken
# from the PyTorch CPU index (PyPI has no +cpu builds, so the pin can never resolve to PyPI's
# multi-GB CUDA build), then checked (torch.version.cuda must be None). Last, the self-test
# (python -m autograder.selftest) grades the reference through run_autograder in the real
# sandbox and fails the install unless it scores 100 (about 30 s on 2 cores).
#
# Environment knobs:
#   SCRATCH1_GRADESCOPE=1|0      force Gradescope mode (1) or local mode (0).
#   SCRATCH1_PYTHON=PATH         local mode: the Python that creates .venv (default python3;
#                                3.10 to 3.12).
#   SCRATCH1_TORCH_INDEX=URL     where the CPU build of torch comes from (default the PyTorch
#                                CPU index; a mirror of it, or a local folder's file:// index).
#   SCRATCH1_DRY_RUN=1           Gradescope mode only: print the commands that change
#                                the system instead of running them (no self-test).
#   SCRATCH1_AUTOGRADER_ROOT=DIR use DIR instead of /autograder (for testing the
#                                Gradescope branch inside a throwaway directory).
set -euo pipefail

KIT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$KIT"

TORCH_INDEX="${SCRATCH1_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"
AG_ROOT="${SCRATCH1_AUTOGRADER_ROOT:-/autograder}"
DRY_RUN="${SCRATCH1_DRY_RUN:-0}"

say() { printf 'setup.sh: %s\n' "$*"; }
die() { printf 'setup.sh: ERROR: %s\n' "$*" >&2; exit 1; }

# run CMD...: run it, or in dry-run mode only print it.
run() {
    if [ "$DRY_RUN" = 1 ]; then
        printf 'setup.sh: [dry-run]'
        printf ' %q' "$@"
        printf '\n'
    else
        "$@"
    fi
}

[ -f requirements.txt ] || die "requirements.txt not found in $KIT"

# The exact CPU pin, e.g. torch==2.13.0+cpu (one line of requirements.txt).
TORCH_PIN="$(grep -E '^torch==[^ ;#]+[+]cpu' requirements.txt | head -n 1 | tr -d '[:space:]')"
[ -n "$TORCH_PIN" ] || die "requirements.txt must pin the CPU build of torch (torch==X.Y.Z+cpu)"

# Mode selection: Gradescope mode where Gradescope puts the kit (an /autograder elsewhere on a
# TA's machine is not a reason to install into the system python).
case "${SCRATCH1_GRADESCOPE:-}" in
    1) MODE=gradescope ;;
    0) MODE=local ;;
    "")
        if [ "$(id -u)" = 0 ] && [ "$KIT" -ef "$AG_ROOT/source" ]; then MODE=gradescope; else MODE=local; fi
        ;;
    *) die "SCRATCH1_GRADESCOPE must be 1, 0 or unset (got '${SCRATCH1_GRADESCOPE}')" ;;
esac
[ "$MODE" = gradescope ] || DRY_RUN=0

gradescope_mode() {
    local src="$AG_ROOT/source" results="$AG_ROOT/results"
    if [ "$DRY_RUN" != 1 ] && [ "$(id -u)" != 0 ]; then
        die "Gradescope mode needs root (set SCRATCH1_GRADESCOPE=0 for a local .venv)"
    fi
    [ -d "$src" ] || die "Gradescope mode: $src does not exist"
    if [ "$KIT" != "$src" ]; then
        say "note: kit is at $KIT, not $src; locking down $src as on Gradescope"
    fi

    # 1. Dependencies into the system python3 (the harness's own python is untouched
    #    otherwise: pip keeps already-installed packages that satisfy a requirement).
    if ! python3 -m pip --version >/dev/null 2>&1; then
        say "python3 has no pip: installing python3-pip with apt"
        run apt-get update
        run env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-pip
    fi
    check_python python3
    local pip_options=(--no-cache-dir --disable-pip-version-check)
    # Ubuntu 24.04's python3 refuses system-wide pip installs (PEP 668); this image is ours.
    if [ -f "$(python3 -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')/EXTERNALLY-MANAGED" ]; then
        pip_options+=(--break-system-packages)
    fi
    install_requirements python3 "${pip_options[@]}"

    # 2. bubblewrap, and libseccomp (the worker's network filter where namespaces are refused).
    ensure_bubblewrap
    ensure_libseccomp

    # 3. Lock-down. The grader copies the worker code and the submission into a fresh
    #    per-run sandbox, so nothing under source/ needs to be readable by the worker.
    say "locking down $src (go-rwx) and $results (700)"
    run chmod -R go-rwx "$src"
    run mkdir -p "$results"
    run chmod 700 "$results"

    # 4. Smoke test: a uid of the worker's range (no passwd entry, in no group) must be able to
    #    import the installed packages (run from / with -I so nothing from the kit or the cwd is
    #    on sys.path).
    local id=$((0x70000000 + RANDOM))
    say "checking that an unprivileged worker uid ($id) can import the dependencies"
    run bash -c 'cd / && setpriv --reuid="$1" --regid="$1" --clear-groups -- python3 -I -c "
import torch, numpy, pytest, pytest_timeout, gradescope_utils, matplotlib
print(\"setup.sh: worker sees torch\", torch.__version__, \"(cuda:\", torch.version.cuda, \")\")
"' _ "$id"
}

# check_python PY: the kit supports Python 3.10 to 3.12 (3.10 on Gradescope).
check_python() {
    "$1" -c 'import sys; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 12))' 2>/dev/null ||
        die "$1 is $("$1" --version 2>&1 || echo 'not runnable'); the kit needs Python 3.10 to 3.12 (set SCRATCH1_PYTHON)"
}

# install_requirements PY [PIP OPTIONS...]: torch first, alone, from the CPU index only (no
# dependencies, so pip asks that index about nothing else: an unreachable index then costs one
# lookup, ~10 s of retries, not one per package); then requirements.txt from the default index,
# where the installed torch already satisfies the +cpu pin and only its dependencies are added.
install_requirements() {
    local py="$1"; shift
    local version
    version="$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    say "installing $TORCH_PIN for Python $version from $TORCH_INDEX"
    if ! run "$py" -m pip install "$@" --no-deps --index-url "$TORCH_INDEX" "$TORCH_PIN"; then
        die "could not install $TORCH_PIN for Python $version from $TORCH_INDEX (see pip's
messages above). The kit installs only this CPU build: PyPI's torch is the multi-GB CUDA build,
whose import alone does not fit the worker's memory limit. To fix: let this machine reach
$TORCH_INDEX (proxy settings), or point SCRATCH1_TORCH_INDEX at a mirror of it, or download
${TORCH_PIN/==/-}-cp${version/./}-cp${version/./}-manylinux_2_28_x86_64.whl from $TORCH_INDEX/torch/
on another machine and run PIP_FIND_LINKS=<its folder> ./setup.sh"
    fi
    say "installing requirements.txt"
    run "$py" -m pip install "$@" -r requirements.txt ||
        die "pip could not install requirements.txt for Python $version (see its messages above)"
}

# bubblewrap (bwrap) gives the worker a filesystem of its own: only the interpreter, its sandbox
# folder and a private /tmp (autograder/sandbox/filesystem.py). Where the platform refuses it (Docker
# without CAP_SYS_ADMIN) or it is missing, the grader falls back to unshare, then to file
# permissions alone, and each report's "Isolation:" line says which held.
ensure_bubblewrap() {
    if command -v bwrap >/dev/null 2>&1; then
        say "bubblewrap present ($(bwrap --version 2>&1))"
    elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "installing bubblewrap with apt"
        if ! { run apt-get update -qq &&
               run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends bubblewrap; }; then
            say "warning: bubblewrap could not be installed: files outside the kit stay readable by the worker where their permissions allow"
        fi
    else
        say "note: bubblewrap (bwrap) is not installed; as root, 'apt-get install bubblewrap' hides the rest of the filesystem from the worker"
    fi
}

# libseccomp (libseccomp2, which apt itself needs, so nearly always there): pyseccomp loads it for
# the worker's network filter where the platform refuses namespaces (autograder/worker/confine/).
ensure_libseccomp() {
    if ldconfig -p 2>/dev/null | grep -q 'libseccomp\.so\.2'; then
        say "libseccomp present"
    elif ! { run apt-get update -qq &&
             run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libseccomp2; }; then
        say "warning: libseccomp2 could not be installed: without namespaces the worker's network stays open"
    fi
}

local_mode() {
    local venv="$KIT/.venv" stamp="$KIT/.venv/.requirements.sha256" want have=""
    local python="${SCRATCH1_PYTHON:-python3}"
    if [ -x "$venv/bin/python" ] && ! "$venv/bin/python" -c '' >/dev/null 2>&1; then
        say ".venv is broken (its python does not run): recreating it"
        rm -rf "$venv"
    fi
    if [ ! -x "$venv/bin/python" ]; then
        check_python "$python"
        say "creating .venv with $("$python" --version 2>&1)"
        "$python" -m venv "$venv"
    fi
    check_python "$venv/bin/python"

    want="$(sha256sum requirements.txt | cut -d' ' -f1)"
    [ -f "$stamp" ] && have="$(cat "$stamp")"
    if [ "$want" = "$have" ]; then
        say "requirements.txt unchanged since the last install: skipping pip"
    else
        install_requirements "$venv/bin/python" --quiet --disable-pip-version-check
        printf '%s\n' "$want" >"$stamp.tmp"
        mv "$stamp.tmp" "$stamp"
    fi

    ensure_bubblewrap
}

# self_test PY: the CPU build of torch, and the reference graded at 100 in the real sandbox.
self_test() {
    say "self-test: grading reference/backbone.py as a submission (python -m autograder.selftest)"
    local start=$SECONDS
    (cd "$KIT" && PYTHONPATH="$KIT" PYTHONDONTWRITEBYTECODE=1 "$1" -m autograder.selftest) ||
        die "the self-test failed (above): grading on this machine would be wrong; fix it and run ./setup.sh again"
    say "self-test passed in $((SECONDS - start)) s"
}

say "kit at $KIT, mode: $MODE"
if [ "$MODE" = gradescope ]; then
    gradescope_mode
    if [ "$DRY_RUN" = 1 ]; then
        say "done: Gradescope mode (dry run, nothing changed, no self-test)"
    else
        self_test python3
        say "done: Gradescope mode (system python3, $AG_ROOT locked down)"
    fi
else
    local_mode
    self_test "$KIT/.venv/bin/python"
    say "done: local mode (.venv/bin/python)"
fi
