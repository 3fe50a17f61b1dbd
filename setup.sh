#!/usr/bin/env bash
# Scratch-1 autograder kit: install dependencies and prepare the grader. Idempotent.
#
# Two modes:
#   Gradescope mode: running as root and /autograder exists, or SCRATCH1_GRADESCOPE=1.
#     Installs requirements.txt into the system python3 (3.10 on Ubuntu 22.04) with
#     torch from the PyTorch CPU index, creates the unprivileged user scratch1-worker,
#     and locks /autograder/source and /autograder/results away from every user but root.
#   Local mode: everything else (a TA's machine, CI as root without /autograder).
#     Creates .venv/ next to this script and installs requirements.txt into it; the
#     install is skipped while .venv/.requirements.sha256 matches requirements.txt.
#     As root it also creates scratch1-worker, so local runs drop privileges too.
#
# Environment knobs:
#   SCRATCH1_GRADESCOPE=1|0      force Gradescope mode (1) or local mode (0).
#   SCRATCH1_DRY_RUN=1           Gradescope mode only: print the commands that change
#                                the system instead of running them.
#   SCRATCH1_AUTOGRADER_ROOT=DIR use DIR instead of /autograder (for testing the
#                                Gradescope branch inside a throwaway directory).
set -euo pipefail

KIT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$KIT"

WORKER_USER=scratch1-worker
TORCH_INDEX=https://download.pytorch.org/whl/cpu
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

# Mode selection.
case "${SCRATCH1_GRADESCOPE:-}" in
    1) MODE=gradescope ;;
    0) MODE=local ;;
    "")
        if [ "$(id -u)" = 0 ] && [ -d "$AG_ROOT" ]; then MODE=gradescope; else MODE=local; fi
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
    say "installing requirements.txt into system $(python3 --version 2>&1) (torch from the CPU index)"
    run python3 -m pip install --no-cache-dir --disable-pip-version-check \
        --extra-index-url "$TORCH_INDEX" -r requirements.txt

    # 2. The unprivileged user the worker runs student code as, and bubblewrap.
    ensure_worker_user
    ensure_bubblewrap

    # 3. Lock-down. The grader copies the worker code and the submission into a fresh
    #    per-run sandbox, so nothing under source/ needs to be readable by the worker.
    say "locking down $src (go-rwx) and $results (700)"
    run chmod -R go-rwx "$src"
    run mkdir -p "$results"
    run chmod 700 "$results"

    # 4. Smoke test: the worker user must be able to import the installed packages
    #    (run from / with -I so nothing from the kit or the cwd is on sys.path).
    say "checking that $WORKER_USER can import the dependencies"
    run bash -c 'cd / && runuser -u "$1" -- python3 -I -c "
import torch, numpy, pytest, pytest_timeout, gradescope_utils, matplotlib
print(\"setup.sh: worker sees torch\", torch.__version__, \"(cuda:\", torch.version.cuda, \")\")
"' _ "$WORKER_USER"
}

# The unprivileged user the worker runs student code as (the grader drops to it when root).
ensure_worker_user() {
    if id -u "$WORKER_USER" >/dev/null 2>&1; then
        say "user $WORKER_USER exists"
    else
        say "creating system user $WORKER_USER"
        run useradd --system --no-create-home --shell /usr/sbin/nologin "$WORKER_USER"
    fi
}

# bubblewrap (bwrap) gives the worker a filesystem of its own: only the interpreter, its sandbox
# folder and a private /tmp (autograder/filesystem.py). Where the platform refuses it (Docker
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

local_mode() {
    local venv="$KIT/.venv" stamp="$KIT/.venv/.requirements.sha256" want have=""
    if [ -x "$venv/bin/python" ] && ! "$venv/bin/python" -c '' >/dev/null 2>&1; then
        say ".venv is broken (its python does not run): recreating it"
        rm -rf "$venv"
    fi
    if [ ! -x "$venv/bin/python" ]; then
        say "creating .venv with $(python3 --version 2>&1)"
        python3 -m venv "$venv"
    fi

    want="$(sha256sum requirements.txt | cut -d' ' -f1)"
    [ -f "$stamp" ] && have="$(cat "$stamp")"
    if [ "$want" = "$have" ]; then
        say "requirements.txt unchanged since the last install: skipping pip"
    else
        say "installing requirements.txt into .venv"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements.txt
        printf '%s\n' "$want" >"$stamp.tmp"
        mv "$stamp.tmp" "$stamp"
    fi

    # As root (CI, a TA's root shell) the grader drops the worker to this user, so the
    # kit's own tests exercise the same isolation as Gradescope.
    if [ "$(id -u)" = 0 ]; then
        ensure_worker_user
    fi
    ensure_bubblewrap
}

say "kit at $KIT, mode: $MODE"
if [ "$MODE" = gradescope ]; then
    gradescope_mode
    if [ "$DRY_RUN" = 1 ]; then
        say "done: Gradescope mode (dry run, nothing changed)"
    else
        say "done: Gradescope mode (system python3, user $WORKER_USER, $AG_ROOT locked down)"
    fi
else
    local_mode
    say "done: local mode (.venv/bin/python)"
fi
