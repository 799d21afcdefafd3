#!/usr/bin/env bash
# Runs the whole test suite against the installed wheel on every CPython
# ndshm supports: the host's, and the newer ones of Debian suites in chroots
# made with debootstrap and kept in a cache outside the clone (a second run
# reuses them). Each Python gets a fresh venv with the wheel and the pinned
# test requirements, and its own tmpfs at /dev/shm.
#
#   ci/test-pythons.sh [--bench "BENCHMARKS"] WHEEL [PEER]
#
# WHEEL is the abi3 wheel built on the host (`make wheel`); PEER the Rust
# peer example the cross-language tests run (target/release/examples/peer).
# With --bench, runs `benchmarks/run.py BENCHMARKS --no-write` instead of
# the tests (`make bench-pythons`); raw timings land in benchmarks/out/.
# Needs root (chroot, mounts; installs debootstrap with apt-get if missing),
# the Debian mirror and PyPI.
#
# Environment:
#   NDSHM_PYTHONS        which Pythons, as suite:version or host (default below)
#   NDSHM_PYTHONS_CACHE  where chroots, pip's cache and logs live
#   NDSHM_DEBIAN_MIRROR  the Debian mirror debootstrap reads
set -euo pipefail

start=$SECONDS
repo=$(cd "$(dirname "$0")/.." && pwd)
bench=
if [[ ${1:-} == --bench ]]; then
    bench=${2:?--bench needs the benchmarks to run}
    shift 2
fi
wheel=$(realpath "${1:?usage: $0 WHEEL [PEER]}")
peer=$(realpath "${2:-$repo/target/release/examples/peer}")
all_pythons="host forky:3.13 forky:3.14 forky:3.15 trixie:3.13"
pythons=${NDSHM_PYTHONS:-$all_pythons}
cache=${NDSHM_PYTHONS_CACHE:-/var/cache/ndshm-pythons}
mirror=${NDSHM_DEBIAN_MIRROR:-http://deb.debian.org/debian}
host_python=${PYTHON:-python3}
ca_bundle=$(realpath "${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}")

[[ $(id -u) == 0 ]] || { echo "test-pythons: needs root (chroot and mounts)" >&2; exit 2; }
[[ -f $wheel ]] || { echo "test-pythons: no wheel at $wheel" >&2; exit 2; }
[[ -x $peer ]] || { echo "test-pythons: no peer example at $peer" >&2; exit 2; }

if ! command -v debootstrap >/dev/null; then
    echo "== installing debootstrap"
    apt-get update -q >/dev/null && apt-get install -y -q debootstrap >/dev/null
fi
mkdir -p "$cache/pip" "$repo/benchmarks/out"
exec 9>"$cache/lock"
flock 9 # one run at a time per cache

# What a run tests: the tests and their config, the peer example where the
# tests look for it. No python/ directory: `import ndshm` finds the wheel.
stage=$(mktemp -d "$cache/run.XXXXXX")
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/src/target/release/examples" "$stage/logs"
cp -a "$repo/tests" "$repo/pyproject.toml" "$repo/requirements-dev.txt" "$stage/src/"
# The core's sources, for the layout test that reads its module graph.
mkdir -p "$stage/src/crates/ndshm" && cp -a "$repo/crates/ndshm/src" "$stage/src/crates/ndshm/"
[[ -z $bench ]] || { mkdir -p "$stage/src/benchmarks" && cp "$repo"/benchmarks/*.py "$repo"/benchmarks/*.txt "$stage/src/benchmarks/"; }
cp "$peer" "$stage/src/target/release/examples/peer"
cp "$wheel" "$stage/"
wheel_name=$(basename "$wheel")

# The Debian packages of a suite's chroot: all its Pythons, whichever are
# asked for this time, so that one chroot serves every selection.
packages_for() {
    local suite=$1 list="iproute2" p
    for p in $(printf '%s\n' $all_pythons $pythons | awk '!seen[$0]++'); do
        [[ $p == "$suite":* ]] && list+=",python${p#*:},python${p#*:}-venv"
    done
    echo "$list"
}

# Makes the suite's chroot unless the cache has one with the same packages.
# bookworm's debootstrap has no script for forky; sid's fits every newer suite.
ensure_chroot() {
    local suite=$1 root=$cache/$1 want
    want=$(packages_for "$suite")
    if [[ -f $root/.ndshm-packages && $(<"$root/.ndshm-packages") == "$want" ]]; then
        return
    fi
    local script=/usr/share/debootstrap/scripts/$suite
    [[ -e $script ]] || script=/usr/share/debootstrap/scripts/sid
    echo "== chroot $suite ($want)"
    local t0=$SECONDS
    rm -rf "$root.new"
    if ! debootstrap --variant=minbase --include="$want" "$suite" "$root.new" "$mirror" "$script" \
        >"$stage/logs/debootstrap-$suite.log" 2>&1; then
        tail -20 "$stage/logs/debootstrap-$suite.log" >&2
        return 1
    fi
    echo "$want" >"$root.new/.ndshm-packages"
    rm -rf "$root"
    mv "$root.new" "$root"
    echo "   made in $((SECONDS - t0)) s"
}

# Runs a command in the suite's chroot (or on the host) in a private mount
# namespace, with its own /dev/shm (no one else's segments), and the stage's
# current copy at $STAGE (/ndshm in a chroot); in a chroot also its own /run
# and /tmp, pip's cache and the host's CA bundle. The chroot's root is bind-
# mounted onto itself: `ip netns exec` remounts / and needs a mount point.
# exec all the way down: the command stays in the foreground (a background
# job would inherit SIGINT ignored, and the Ctrl-C tests need it).
in_root() {
    local suite=$1
    shift
    local base=/ndshm cert=/etc/ndshm-ca.crt pipcache=/pip-cache
    [[ $suite == host ]] && base=$stage/current cert=$ca_bundle pipcache=$cache/pip
    local env=(STAGE=$base PATH=$base/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
        HOME=/root LANG=C.UTF-8 PIP_CERT=$cert PIP_CACHE_DIR=$pipcache
        PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180 PYTHONDONTWRITEBYTECODE=1)
    if [[ $suite == host ]]; then
        unshare --mount --propagation private -- bash -c '
            mount -t tmpfs -o mode=1777,size=50% tmpfs /dev/shm
            exec env -i "$@"' _ "${env[@]}" "$@"
        return
    fi
    unshare --mount --propagation private -- bash -c '
        r=$1
        mount --bind "$r" "$r"
        mount -t proc proc "$r/proc"
        mount --rbind /sys "$r/sys"
        mount --rbind /dev "$r/dev"
        mount -t tmpfs -o mode=1777,size=50% tmpfs "$r/dev/shm"
        mount -t tmpfs tmpfs "$r/run"
        mount -t tmpfs -o mode=1777 tmpfs "$r/tmp"
        mkdir -p "$r/ndshm" "$r/pip-cache"
        mount --bind "$2" "$r/ndshm"
        mount --bind "$3" "$r/pip-cache"
        touch "$r/etc/ndshm-ca.crt" && mount --bind "$4" "$r/etc/ndshm-ca.crt"
        cp /etc/resolv.conf "$r/etc/resolv.conf"
        shift 4
        exec chroot "$r" env -i "$@"' _ "$cache/$suite" "$stage/current" "$cache/pip" "$ca_bundle" "${env[@]}" "$@"
}

# The host's interpreter by its real path; a chroot's by its name.
python_cmd() {
    local suite=$1 version=$2
    if [[ $suite == host ]]; then
        "$host_python" -c 'import sys; print(sys.executable)'
    else
        echo "python$version"
    fi
}

status=0
declare -a summary
for p in $pythons; do
    suite=${p%%:*}
    version=${p#*:}
    [[ $suite == host ]] && version=$("$host_python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    label="$suite:$version"
    [[ $suite == host ]] || ensure_chroot "$suite"
    # A fresh venv and a fresh copy of the tests for each Python.
    rm -rf "$stage/current"
    mkdir -p "$stage/current"
    cp -a "$stage/src/." "$stage/current/"
    cp "$stage/$wheel_name" "$stage/current/"
    py=$(python_cmd "$suite" "$version")
    log=$stage/logs/$suite-$version.log
    echo "== $label: venv"
    t0=$SECONDS
    if ! in_root "$suite" bash -c '
        set -e
        cd "$STAGE"
        "$1" -m venv venv
        venv/bin/python -m pip install -q "./$2" -r requirements-dev.txt
        [[ -z $3 ]] || venv/bin/python -m pip install -q -r benchmarks/requirements.txt
        venv/bin/python -c "import sys, ndshm; print(sys.version.split()[0], ndshm.__file__)"
        ' _ "$py" "$wheel_name" "$bench" >"$log" 2>&1; then
        cat "$log"
        summary+=("$label: venv failed")
        status=1
        continue
    fi
    read -r full where < <(tail -1 "$log")
    case $where in
    */site-packages/ndshm/*) ;;
    *) echo "$label: ndshm imported from $where, not the installed wheel" >&2; status=1; continue ;;
    esac
    if [[ -n $bench ]]; then
        echo "   Python $full, venv in $((SECONDS - t0)) s; benchmarks: $bench"
        rc=0
        # shellcheck disable=SC2086 # the benchmarks' names, split on purpose
        in_root "$suite" bash -c 'cd "$STAGE" && exec venv/bin/python benchmarks/run.py --no-write "$@"' _ $bench \
            | tee "$repo/benchmarks/out/pythons-$suite-$version.txt" || rc=$?
        cp "$stage"/current/benchmarks/out/*.json "$repo/benchmarks/out/" 2>/dev/null || true
        [[ $rc == 0 ]] || status=1
        summary+=("Python $full ($label): benchmarks exit $rc, benchmarks/out/pythons-$suite-$version.txt")
        continue
    fi
    echo "   Python $full, venv in $((SECONDS - t0)) s; pytest:"
    t0=$SECONDS
    # In the foreground, its output as it comes; the closing line is kept.
    rc=0
    in_root "$suite" bash -c 'cd "$STAGE" && exec venv/bin/python -m pytest -q -p no:cacheprovider tests' \
        | tee "$log.pytest" || rc=$?
    closing=$(grep -E '^=*.*\b(passed|failed|error|errors|no tests ran)\b.* in [0-9.]+s' "$log.pytest" | tail -1 | tr -d '=' | sed 's/^ *//; s/ *$//')
    [[ -n $closing ]] || closing="pytest ended without its closing line (exit $rc)"
    [[ $rc == 0 ]] || status=1
    summary+=("Python $full ($label): $closing [$((SECONDS - t0)) s]")
done

echo
echo "== test-pythons summary"
printf '%s\n' "${summary[@]}"
echo "wall time: $((SECONDS - start)) s; $([[ $status == 0 ]] && echo all passed || echo FAILED)"
exit $status
