#!/usr/bin/env bash
# A fuzzing campaign: every libFuzzer target (fuzz_sip, fuzz_inbuf, fuzz_proxy, fuzz_proxy_hdr,
# fuzz_ws_handshake, fuzz_ws_frame) built with clang, ASan and UBSan, run for a number of
# executions or a time each, one target per core at a time, from the seed corpora in the
# repository. Prints per target the executions, the time, executions per second, the
# coverage (edges, libFuzzer's "cov") and the findings (crash, leak, timeout and OOM
# inputs, kept under out/fuzz/TARGET/).
# A finding becomes a regression input under tests/fuzz/regressions (by hand, once fixed).
#
# usage: deploy/fuzz-campaign.sh [--runs N | --time SECONDS] [--parallel P] [--max-len B]
#                                [TARGET...]
#        deploy/fuzz-campaign.sh --make-seeds   (rewrites tests/fuzz/seeds/proxy)
# Default: --runs 100000000 (10^8) per target, 2 targets at a time.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=100000000
time_s=0
parallel=2
max_len=0
targets=()
make_seeds=false
while [ $# -gt 0 ]; do
    case "$1" in
    --runs) runs=$2; time_s=0; shift 2 ;;
    --time) time_s=$2; runs=0; shift 2 ;;
    --parallel) parallel=$2; shift 2 ;;
    --max-len) max_len=$2; shift 2 ;;
    --make-seeds) make_seeds=true; shift ;;
    -h|--help) sed -n 2,13p "$0"; exit 0 ;;
    *) targets+=("$1"); shift ;;
    esac
done
[ ${#targets[@]} -gt 0 ] || targets=(fuzz_sip fuzz_inbuf fuzz_proxy fuzz_proxy_hdr fuzz_ws_handshake fuzz_ws_frame)

build=build-fuzz
CC=clang cmake -S . -B "$build" -DSLB_FUZZ=ON -DSLB_TESTS=OFF -DSLB_BENCH=OFF \
    -DSLB_SANITIZE="address;undefined" >"$build.configure.log" 2>&1 ||
    { cat "$build.configure.log"; exit 1; }
cmake --build "$build" -j2 --target "${targets[@]}" >/dev/null

if $make_seeds; then
    rm -f tests/fuzz/seeds/proxy/register-path-and-flow tests/fuzz/seeds/proxy/invite
    SLB_FUZZ_PROXY_SEEDS=tests/fuzz/seeds/proxy "$build/tests/fuzz/fuzz_proxy" -runs=0 \
        tests/fuzz/seeds/proxy >/dev/null 2>&1
    ls -l tests/fuzz/seeds/proxy
    exit 0
fi

seeds_of() {
    case "$1" in
    fuzz_sip) echo tests/corpus/valid tests/corpus/bad tests/corpus/rfc4475 ;;
    fuzz_inbuf) echo tests/corpus/valid ;;
    fuzz_proxy) echo tests/fuzz/seeds/proxy ;;
    fuzz_proxy_hdr) echo tests/fuzz/seeds/proxy_hdr ;;
    fuzz_ws_handshake) echo tests/fuzz/seeds/ws_handshake ;;
    fuzz_ws_frame) echo tests/fuzz/seeds/ws_frame ;;
    esac
}
max_len_of() {
    [ "$max_len" -gt 0 ] && { echo "$max_len"; return; }
    case "$1" in
    fuzz_inbuf) echo 20000 ;;
    fuzz_proxy_hdr) echo 600 ;;
    fuzz_ws_handshake) echo 9000 ;; # SLB_WS_HANDSHAKE_MAX (8192) and a little more
    fuzz_ws_frame) echo 70000 ;; # RFC 6455 5.7's 64 KiB frame, whole
    *) echo 70000 ;;
    esac
}

stamp=$(date -u +%Y%m%dT%H%M%SZ)
report=out/fuzz-campaign-$stamp.txt
mkdir -p out
run_one() {
    local t=$1 dir=out/fuzz/$t
    mkdir -p "$dir/corpus"
    local limit=(-runs="$runs")
    [ "$time_s" -gt 0 ] && limit=(-max_total_time="$time_s")
    local t0=$SECONDS
    # -print_final_stats gives the executions and the rate; the last "cov:" the edges.
    (cd "$dir" && "../../../$build/tests/fuzz/$t" "${limit[@]}" -max_len="$(max_len_of "$t")" \
        -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 corpus \
        $(for s in $(seeds_of "$t"); do echo "../../../$s"; done) >log.txt 2>&1) || true
    local elapsed=$((SECONDS - t0))
    local execs rate cov findings
    execs=$(grep -a 'stat::number_of_executed_units' "$dir/log.txt" | awk '{print $2}' | tail -1)
    rate=$(grep -a 'stat::average_exec_per_sec' "$dir/log.txt" | awk '{print $2}' | tail -1)
    cov=$(grep -ao 'cov: [0-9]*' "$dir/log.txt" | tail -1 | awk '{print $2}')
    findings=$(find "$dir" -maxdepth 1 \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' \
        -o -name 'oom-*' \) | wc -l)
    printf '%-11s executions %-11s time %6ss  exec/s %-7s edges %-5s findings %s\n' "$t" \
        "${execs:-?}" "$elapsed" "${rate:-?}" "${cov:-?}" "$findings" | tee -a "$report"
}

echo "fuzz campaign $stamp: ${targets[*]}, $([ "$time_s" -gt 0 ] && echo "${time_s}s" ||
    echo "$runs runs") each, ASan+UBSan, $parallel at a time" | tee "$report"
pids=()
for t in "${targets[@]}"; do
    run_one "$t" &
    pids+=($!)
    if [ ${#pids[@]} -ge "$parallel" ]; then
        wait "${pids[0]}"
        pids=("${pids[@]:1}")
    fi
done
for p in "${pids[@]}"; do wait "$p"; done
echo "report: $report"
! grep -q 'findings [1-9]' "$report"
