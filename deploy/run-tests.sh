#!/usr/bin/env bash
# run-tests.sh — the test command of README.md, and what .ci/run calls.
# On a fresh Debian 12 machine (root): installs what the tests need, builds with warnings
# as errors, runs every test suite (unit, tool, end-to-end), then a bounded fuzz run under
# ASan+UBSan, after the end-to-end attack suites again under ASan+UBSan. Prints each runner's
# closing lines. Exit status non-zero on any failure.
#
# Environment: SLB_BUILD_DIR (default build-ci), SLB_FUZZ_SECONDS (default 30),
#              SLB_SKIP_DEPS=1 to skip the dependency step (already installed).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
build=${SLB_BUILD_DIR:-build-ci}
fuzz_seconds=${SLB_FUZZ_SECONDS:-30}

step() { printf '\n=== %s ===\n' "$*"; }

if [[ "${SLB_SKIP_DEPS:-0}" != 1 ]]; then
    step "dependencies (deploy/setup-deps.sh)"
    bash deploy/setup-deps.sh
fi

step "format (deploy/check-format.sh: .clang-format, legacy files listed apart)"
bash deploy/check-format.sh

step "build ($build, gcc, -Werror)"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSLB_WERROR=ON -DSLB_TESTS=ON \
      -DSLB_BENCH=ON >"$build.configure.log" 2>&1 || { cat "$build.configure.log"; exit 1; }
grep -E "wolfSSL|WARNING" "$build.configure.log" || true
cmake --build "$build" -j2

step "tests (ctest)"
# -V so each Criterion runner's synthesis line is there to show; ctest's summary closes.
set +e
ctest --test-dir "$build" -V --timeout 900 >"$build/ctest.log" 2>&1
rc=$?
set -e
grep -E "Test +#|Synthesis|tests passed|tests failed|Total Test time|[0-9]+ passed, [0-9]+ failed" "$build/ctest.log" \
    | sed -E 's/^[0-9]+: //'
if [[ $rc -ne 0 ]]; then
    ctest --test-dir "$build" --rerun-failed --output-on-failure --timeout 900 || true
    exit "$rc"
fi

step "under ASan+UBSan ($build-asan): the core, balancer, secrets and TLS unit tests, the hostile-edge, relay, faults, routing, edge, failover, RFC 4475, TLS policy, operations, upgrade, scale-out and WebSocket end-to-end suites"
# The attacks of tests/e2e/test_hostile.py drive the input paths that once overflowed; here
# any out-of-bounds access, leak at exit or undefined behaviour stops sipslb (and so fails
# its test), and every report also lands in $san_logs, which must stay empty.
cmake -S . -B "$build-asan" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSLB_WERROR=ON -DSLB_TESTS=ON \
      -DSLB_BENCH=ON -DSLB_SANITIZE="address;undefined" >"$build-asan.configure.log" 2>&1 \
    || { cat "$build-asan.configure.log"; exit 1; }
cmake --build "$build-asan" -j2
san_logs=$(mktemp -d /tmp/sipslb-sanitizer.XXXXXX)
set +e
SLB_E2E_SANITIZED=1 \
ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:log_path=$san_logs/asan" \
UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$san_logs/ubsan" \
    ctest --test-dir "$build-asan" -V --timeout 900 \
          -R '^(core|balancer|secrets|test_tls|test_sip_stream|test_relay|e2e_hostile|e2e_relay|e2e_faults|e2e_routing|e2e_edge|e2e_failover|e2e_rfc4475|e2e_tls_policy|e2e_operations|e2e_upgrade|e2e_scale_out|e2e_wss)$' \
          >"$build-asan/ctest.log" 2>&1
rc=$?
set -e
grep -E "Test +#|Synthesis|tests passed|tests failed|Total Test time|[0-9]+ passed, [0-9]+ failed" \
    "$build-asan/ctest.log" | sed -E 's/^[0-9]+: //'
if compgen -G "$san_logs/*" >/dev/null; then
    echo "sanitizer reports:"
    head -n 60 "$san_logs"/*
    rc=1
fi
if [[ $rc -ne 0 ]]; then
    grep -E "^([0-9]+: )?FAILED|Error|assert|calls, " "$build-asan/ctest.log" | head -n 40 || true
    exit "$rc"
fi

step "under TSan ($build-tsan, clang): the routing (reloads, failover) and relay end-to-end suites"
# Workers, the health checker and the main thread share the routing tables, the backends a
# reload builds, the counters and the hand-over slots: any data race among them stops the
# run. Suppressions (tests/tsan.supp) cover the mock backend only.
CC=clang cmake -S . -B "$build-tsan" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSLB_WERROR=ON \
      -DSLB_TESTS=ON -DSLB_BENCH=ON -DSLB_SANITIZE=thread >"$build-tsan.configure.log" 2>&1 \
    || { cat "$build-tsan.configure.log"; exit 1; }
cmake --build "$build-tsan" -j2 --target sipslb sipslb-uas sipslb-load
tsan_logs=$(mktemp -d /tmp/sipslb-tsan.XXXXXX)
set +e
SLB_E2E_SANITIZED=1 \
TSAN_OPTIONS="halt_on_error=0:log_path=$tsan_logs/tsan:suppressions=$top/tests/tsan.supp" \
    ctest --test-dir "$build-tsan" -V --timeout 900 -R '^(e2e_routing|e2e_relay)$' \
          >"$build-tsan/ctest.log" 2>&1
rc=$?
set -e
grep -E "Test +#|tests passed|tests failed|Total Test time|[0-9]+ passed, [0-9]+ failed" \
    "$build-tsan/ctest.log" | sed -E 's/^[0-9]+: //'
if compgen -G "$tsan_logs/*" >/dev/null; then
    echo "ThreadSanitizer reports:"
    grep -h "SUMMARY" "$tsan_logs"/* | sort | uniq -c
    head -n 80 "$tsan_logs"/*
    rc=1
fi
[[ $rc -eq 0 ]] || exit "$rc"

step "fuzz (clang, ASan+UBSan, ${fuzz_seconds}s)"
CC=clang cmake -S . -B "$build-fuzz" -DSLB_FUZZ=ON -DSLB_TESTS=OFF -DSLB_BENCH=OFF \
      -DSLB_SANITIZE="address;undefined" -DSLB_FUZZ_SECONDS="$fuzz_seconds" \
      >"$build-fuzz.configure.log" 2>&1 || { cat "$build-fuzz.configure.log"; exit 1; }
cmake --build "$build-fuzz" -j2 --target fuzz_sip fuzz_inbuf fuzz_proxy fuzz_proxy_hdr fuzz_ws_handshake fuzz_ws_frame
ctest --test-dir "$build-fuzz" --output-on-failure --timeout $((fuzz_seconds + 120))
