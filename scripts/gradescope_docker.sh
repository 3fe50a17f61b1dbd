#!/usr/bin/env bash
# Try dist/autograder.zip in a Gradescope-like container before uploading it: Docker with its
# default seccomp profile and capabilities (so bubblewrap and unshare are refused, as on
# Gradescope, and the kit runs in its degraded isolation mode), root inside, the zip unpacked
# into /autograder/source WITHOUT file modes, run_autograder copied to /autograder and made
# executable, `apt-get update && bash setup.sh` as root (the self-test included), then each
# grading in a fresh container under Gradescope's default limits (0.5 CPU, 768 MB, 10 min).
#
#   scripts/gradescope_docker.sh base                       # once: Debian rootfs -> image gs-base
#   scripts/gradescope_docker.sh build dist/autograder.zip  # image gs-grader; prints the build time
#   scripts/gradescope_docker.sh grade FILE OUT.json [--cpus 0.5] [--mem-mb 768]
#       FILE (backbone.py or a zip) as /autograder/submission, ./run_autograder in /autograder;
#       writes OUT.json (results.json) and OUT.json.stdout; prints the score and the wall time
#   scripts/gradescope_docker.sh run [--cpus N] [--mem-mb M] [--mount DIR]... -- COMMAND...
#       COMMAND in a fresh gs-grader container, in /autograder/source, with this checkout's
#       tests/ at /autograder/source/tests and each DIR at the same path (read-only): the
#       kit's own tests against the installed kit, e.g.
#       scripts/gradescope_docker.sh run --cpus 1 -- python3 -m pytest -p no:cacheprovider tests/test_hostile.py
#
# Needs root, Docker (Debian/Ubuntu: apt-get install -y docker.io debootstrap) and a running
# dockerd (started here if absent). The image is Debian bookworm (Python 3.11), not
# Gradescope's Ubuntu 22.04 (3.10); the kernel is this machine's. pip inside the build uses this
# machine's CA bundle, find-links folders and package index settings.
set -u
KIT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cmd=${1:-}; shift || true
ca=/etc/ssl/certs/ca-certificates.crt

ensure_docker() {
  command -v docker >/dev/null || { echo "gradescope_docker: install Docker (apt-get install -y docker.io)" >&2; exit 2; }
  docker info >/dev/null 2>&1 && return
  (dockerd >/tmp/gradescope-docker-dockerd.log 2>&1 &)
  for _ in $(seq 30); do docker info >/dev/null 2>&1 && return; sleep 1; done
  echo "gradescope_docker: dockerd did not start (see /tmp/gradescope-docker-dockerd.log)" >&2; exit 2
}

pip_env() {  # this machine's pip settings, passed into the build
  local args=(-v "$ca:$ca:ro" -e PIP_CERT=$ca -e SSL_CERT_FILE=$ca -e REQUESTS_CA_BUNDLE=$ca)
  local links; links=$(pip config get global.find-links 2>/dev/null || echo "${PIP_FIND_LINKS:-}")
  for d in $links; do [ -d "$d" ] && args+=(-v "$d:$d:ro"); done
  [ -n "$links" ] && args+=(-e "PIP_FIND_LINKS=$links")
  local extra; extra=$(pip config get global.extra-index-url 2>/dev/null || true)
  for u in $extra; do case $u in file://*) d=${u#file://}; d=${d%/simple}; [ -d "$d" ] && args+=(-v "$d:$d:ro");; esac; done
  [ -n "$extra" ] && args+=(-e "PIP_EXTRA_INDEX_URL=$extra")
  printf '%s\n' "${args[@]}"
}

limits() {  # --cpus/--mem-mb from "$@" into the globals cpus, mem, rest (what is left)
  cpus=0.5; mem=768; mounts=(); rest=()
  while [ $# -gt 0 ]; do case $1 in
    --cpus) cpus=$2; shift 2;; --mem-mb) mem=$2; shift 2;;
    --mount) mounts+=(-v "$(realpath "$2"):$(realpath "$2"):ro"); shift 2;;
    --) shift; rest+=("$@"); break;; *) rest+=("$1"); shift;; esac; done
}

case $cmd in
base)
  ensure_docker
  command -v debootstrap >/dev/null || { echo "gradescope_docker: apt-get install -y debootstrap" >&2; exit 2; }
  root=$(mktemp -d)
  mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null)
  debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$root" ${mirror:+"$mirror"} >/tmp/gradescope-docker-debootstrap.log 2>&1 \
    || { echo "gradescope_docker: debootstrap failed (see /tmp/gradescope-docker-debootstrap.log)" >&2; exit 1; }
  tar -C "$root" -c . | docker import - gs-base >/dev/null && rm -rf "$root" && echo "gradescope_docker: image gs-base ready"
  ;;
build)
  ensure_docker
  zip=$(realpath "${1:?usage: gradescope_docker.sh build AUTOGRADER.zip}")
  mapfile -t pe < <(pip_env)
  docker rm -f gs-build >/dev/null 2>&1
  t0=$SECONDS
  # Gradescope: ADD source /autograder/source; cp run_autograder; chmod +x; apt-get update && bash setup.sh.
  # Python's zipfile sets no file modes: nothing in the kit may need an exec bit but the copy.
  docker run --name gs-build "${pe[@]}" -v "$zip:/autograder.zip:ro" gs-base bash -c '
    set -e; mkdir -p /autograder/source
    python3 -c "import zipfile; zipfile.ZipFile(\"/autograder.zip\").extractall(\"/autograder/source\")"
    cp /autograder/source/run_autograder /autograder/run_autograder && chmod +x /autograder/run_autograder
    apt-get update -qq && bash /autograder/source/setup.sh'
  rc=$?
  [ $rc -eq 0 ] && docker commit gs-build gs-grader >/dev/null && echo "gradescope_docker: image gs-grader ready in $((SECONDS - t0)) s"
  docker rm -f gs-build >/dev/null 2>&1
  exit $rc
  ;;
grade)
  ensure_docker
  file=$(realpath "${1:?usage: gradescope_docker.sh grade FILE OUT.json}"); out_json=${2:?}; shift 2
  limits "$@"
  sub=$(mktemp -d); out=$(mktemp -d); chmod 777 "$out"
  case $file in
    *.zip) python3 -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" "$file" "$sub";;
    *) cp "$file" "$sub/backbone.py";;
  esac
  t0=$(date +%s.%N)
  docker run --rm --cpus "$cpus" --memory "${mem}m" --memory-swap "${mem}m" -v "$sub:/sub:ro" -v "$out:/out" gs-grader \
    bash -c 'mkdir -p /autograder/submission && cp -r /sub/. /autograder/submission/ && cd /autograder &&
      timeout 600 ./run_autograder >/out/stdout 2>&1; echo "run_autograder exit $?" >>/out/stdout
      cp /autograder/results/results.json /out/results.json 2>/dev/null'
  t1=$(date +%s.%N)
  cp "$out/stdout" "$out_json.stdout"; cp "$out/results.json" "$out_json" 2>/dev/null
  rm -rf "$sub" "$out"
  python3 - "$out_json" "$t0" "$t1" <<'PY'
import json, sys
wall = float(sys.argv[3]) - float(sys.argv[2])
try:
    print(f"gradescope_docker: score {json.load(open(sys.argv[1])).get('score')}, wall {wall:.1f} s")
except Exception as e:
    print(f"gradescope_docker: no results.json ({e}), wall {wall:.1f} s"); sys.exit(1)
PY
  ;;
run)
  ensure_docker
  limits "$@"
  [ ${#rest[@]} -gt 0 ] || { echo "usage: gradescope_docker.sh run [--cpus N] [--mem-mb M] [--mount DIR]... -- COMMAND..." >&2; exit 2; }
  docker run --rm --cpus "$cpus" --memory "${mem}m" --memory-swap "${mem}m" \
    -v "$KIT/tests:/autograder/source/tests:ro" "${mounts[@]}" -w /autograder/source -e PYTHONDONTWRITEBYTECODE=1 \
    gs-grader bash -c 'chmod +x run_autograder && exec "$@"' _ "${rest[@]}"  # kit tests run it directly
  ;;
*) sed -n 2,22p "$0"; exit 2;;
esac
