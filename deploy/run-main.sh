#!/usr/bin/env bash
# run-main.sh — the main job of README.md: install, build, then sipslb in front of local
# SIPS backends under load, side by side with Kamailio and HAProxy doing the same work
# (bench/run, a few minutes), then the SIP layer's and wolfSSL's own figures. Prints a
# report and saves it (with bench/run's JSON and plots) under out/.
#
# Environment: SLB_BUILD_DIR (default build-main), SLB_SKIP_DEPS=1 to skip installs.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
build=${SLB_BUILD_DIR:-build-main}
out=out
mkdir -p "$out"

if [[ "${SLB_SKIP_DEPS:-0}" != 1 ]]; then
    bash deploy/setup-deps.sh
fi
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DSLB_TESTS=OFF -DSLB_BENCH=ON \
      >"$build.configure.log" 2>&1 || { cat "$build.configure.log"; exit 1; }
cmake --build "$build" -j2 >"$build.build.log" 2>&1 || { tail -50 "$build.build.log"; exit 1; }

report="$out/report-$(date -u +%Y%m%dT%H%M%SZ).txt"
{
    echo "sipslb report — $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores, kernel $(uname -r)"
    grep -E "wolfSSL" "$build.configure.log" | sed 's/^-- /build: /' || true
    echo
    echo "== sipslb in front of 2 local SIPS backends under load, against Kamailio and HAProxy =="
    python3 bench/run --build "$build" --out "$out" || echo "bench/run failed (exit $?)"
    echo
    "$build/bench/sipslb-bench-scan"
    if [[ -x "$build/bench/sipslb-tls-speed" ]]; then
        echo
        echo "wolfSSL, optimized build (what sipslb links):"
        "$build/bench/sipslb-tls-speed"
        if [[ -x "$build/bench/sipslb-tls-speed-system" ]]; then
            echo
            echo "wolfSSL, Debian's binary (for comparison):"
            "$build/bench/sipslb-tls-speed-system"
        fi
    fi
} | tee "$report"
echo
echo "report saved to $report"
