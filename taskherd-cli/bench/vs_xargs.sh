#!/usr/bin/env bash
# Per-job overhead of `taskherd run` against `xargs -P` and GNU parallel.
#
# Runs the same job list of trivial jobs (`true`) with each tool at the same parallelism, each
# job through `sh -c` (what taskherd does, and what xargs and parallel do here), and prints the
# wall-clock time of the best of several runs, the time per job, and each tool's ratio to xargs.
# With jobs this small, the time is all overhead: starting a shell per job, plus the tool's own
# bookkeeping (for taskherd: the pool's admission, a process group and two output pipes per job).
#
# Usage, from anywhere in the repository:
#
#   taskherd-cli/bench/vs_xargs.sh [JOBS] [PARALLEL] [RUNS]     # defaults: 5000 8 3
#
# Builds taskherd in release mode first. GNU parallel is installed with apt-get if it is missing
# and we may (root, or sudo without a password); if that fails its row is skipped.
set -euo pipefail

jobs=${1:-5000}
parallel_jobs=${2:-8}
runs=${3:-3}

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
cargo build --release --quiet -p taskherd-cli
# Where cargo put it: honours CARGO_TARGET_DIR and the build configuration.
target_dir=$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
taskherd=$target_dir/release/taskherd
if [ ! -x "$taskherd" ]; then
    echo "vs_xargs.sh: no taskherd binary at $taskherd after building it" >&2
    exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
awk -v n="$jobs" 'BEGIN { for (i = 0; i < n; i++) print "true" }' > "$work/jobs.txt"

if ! command -v parallel >/dev/null 2>&1; then
    echo "GNU parallel is missing: installing it with apt-get" >&2
    if [ "$(id -u)" -eq 0 ]; then
        apt-get install -y -qq parallel >/dev/null 2>&1 || true
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n apt-get install -y -qq parallel >/dev/null 2>&1 || true
    fi
    command -v parallel >/dev/null 2>&1 || echo "could not install GNU parallel: skipping it" >&2
fi

run_taskherd() { "$taskherd" run -j "$parallel_jobs" --no-progress --no-summary -; }
run_xargs() { xargs -P "$parallel_jobs" -I{} sh -c {}; }
run_parallel() { parallel --will-cite -j "$parallel_jobs"; }

tools="xargs taskherd"
if command -v parallel >/dev/null 2>&1; then
    tools="$tools parallel"
fi

echo "$jobs jobs of 'true', $parallel_jobs at a time, best of $runs runs, on $(nproc) CPUs"
echo "  taskherd: $taskherd run -j $parallel_jobs --no-progress --no-summary - < JOBS"
echo "  xargs:    xargs -P $parallel_jobs -I{} sh -c {} < JOBS"
echo "  parallel: parallel --will-cite -j $parallel_jobs < JOBS"
echo

# The best wall-clock time of each tool, in nanoseconds. Runs alternate between the tools so
# that a busy moment of the machine does not fall on one tool only.
declare -A best
for _ in $(seq "$runs"); do
    for tool in $tools; do
        start=$(date +%s%N)
        if ! "run_$tool" < "$work/jobs.txt" > /dev/null 2> "$work/$tool.err"; then
            echo "vs_xargs.sh: $tool failed:" >&2
            tail -n 20 "$work/$tool.err" >&2
            exit 1
        fi
        end=$(date +%s%N)
        elapsed=$((end - start))
        if [ -z "${best[$tool]:-}" ] || [ "$elapsed" -lt "${best[$tool]}" ]; then
            best[$tool]=$elapsed
        fi
    done
done
xargs_ns=${best[xargs]}

row() {
    awk -v name="$1" -v ns="$2" -v base="$xargs_ns" -v jobs="$jobs" \
        'BEGIN { printf "%-10s %8.2f s %9.0f us/job %8.2fx xargs\n", name, ns / 1e9, ns / 1e3 / jobs, ns / base }'
}
printf "%-10s %10s %16s %14s\n" tool time "per job" ratio
for tool in taskherd xargs parallel; do
    if [ -n "${best[$tool]:-}" ]; then
        row "$tool" "${best[$tool]}"
    fi
done
