#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Smoke test of busd-bench: runs the bulk scenario once on small sizes
# (--count 1 --max-size 1M) and the rtt, pubsub, fanout and conns scenarios
# at a tiny count (and cpu where valgrind can run busd) against its own busd,
# and checks that it measured every figure and lost nothing. It asserts no timing: speed is measured by
# the benchmark and read by people, never asserted by tests. Speaks TAP.
set -u

: "${BUSD_BUILDDIR:?set by the Makefile}"
bench=${BUSD_BENCH:-$BUSD_BUILDDIR/tools/busd-bench}

dir=$(mktemp -d "${TMPDIR:-/tmp}/test-busd-bench.XXXXXX") || exit 1
trap 'rm -rf "$dir"' EXIT

n=0
failed=0
pass() {
        n=$((n + 1))
        echo "ok $n - $1"
}
fail() { # description [file to show]
        n=$((n + 1))
        failed=1
        echo "not ok $n - $1"
        if [ -n "${2:-}" ]; then
                sed 's/^/# /' "$2"
        fi
}

# The figures of the JSON output, one "name value" per line.
figures() {
        awk '/^ *"[a-z]+\.[A-Za-z0-9_.]*": / {
                name = $1; gsub(/[":]/, "", name)
                value = $2; sub(/,$/, "", value)
                print name, value
        }' "${1:-$dir/bench.json}"
}

echo "1..10"

if "$bench" --help >"$dir/help" 2>&1 && grep -q '^  bulk ' "$dir/help"; then
        pass "--help lists the bulk scenario"
else
        fail "--help lists the bulk scenario" "$dir/help"
fi

if "$bench" no-such-scenario >"$dir/unknown" 2>&1; then
        fail "an unknown scenario is refused" "$dir/unknown"
elif grep -q "unknown scenario 'no-such-scenario'" "$dir/unknown"; then
        pass "an unknown scenario is refused"
else
        fail "an unknown scenario is refused" "$dir/unknown"
fi

if "$bench" bulk --count 1 --max-size 1M --json >"$dir/bench.json" 2>"$dir/bench.err"; then
        pass "busd-bench bulk --count 1 --max-size 1M --json exits 0"
else
        cat "$dir/bench.err" "$dir/bench.json" >"$dir/bench.all"
        fail "busd-bench bulk --count 1 --max-size 1M --json exits 0" "$dir/bench.all"
fi

if command -v python3 >/dev/null 2>&1; then
        if python3 -m json.tool "$dir/bench.json" >/dev/null 2>"$dir/json.err"; then
                pass "the output is valid JSON"
        else
                fail "the output is valid JSON" "$dir/json.err"
        fi
else
        pass "the output is valid JSON # SKIP python3 is not installed"
fi

figures >"$dir/figures"
# Every time and throughput measured, and above zero (null or 0 means a
# measurement that did not happen).
awk '$1 ~ /_(ms|MBps)$/ { total++; if ($2 == "null" || $2 + 0 <= 0) { bad++; print } }
     END { if (total < 100) { print "only " total + 0 " figures"; exit 1 } exit bad > 0 }' \
        "$dir/figures" >"$dir/bad"
if [ $? -eq 0 ]; then
        pass "every _ms and _MBps figure is a number above zero"
else
        fail "every _ms and _MBps figure is a number above zero" "$dir/bad"
fi

: >"$dir/missing"
for name in bulk.inline_4KiB_1subs_ms bulk.shm_4KiB_1subs_ms bulk.busd_4KiB_1subs_ms \
        bulk.socket_copy_4KiB_ms bulk.memfd_handoff_4KiB_ms bulk.inline_1MiB_8subs_ms \
        bulk.busd_1MiB_8subs_ms bulk.memfd_fanout_1MiB_8subs_ms bulk.socket_fanout_1MiB_8subs_ms \
        bulk.shm_vs_inline_1MiB_8subs_ratio bulk.busd_rss_growth_bytes; do
        grep -q "^$name [0-9-]" "$dir/figures" || echo "$name" >>"$dir/missing"
done
if [ -s "$dir/missing" ]; then
        fail "the named figures are there" "$dir/missing"
else
        pass "the named figures are there"
fi

if grep -qx 'bulk.lost 0' "$dir/figures" && grep -qx 'bulk.corrupt 0' "$dir/figures" &&
        grep -qx 'bulk.wrong_transport 0' "$dir/figures"; then
        pass "\"bulk.lost\": 0, nothing corrupt, nothing on the wrong transport"
else
        grep '^bulk\.\(lost\|corrupt\|wrong_transport\) ' "$dir/figures" >"$dir/lost"
        fail "\"bulk.lost\": 0, nothing corrupt, nothing on the wrong transport" "$dir/lost"
fi

# The other scenarios, tiny: the figures exist, are above zero, nothing lost.
if "$bench" rtt pubsub fanout conns --count 50 --json >"$dir/small.json" 2>"$dir/small.err"; then
        pass "busd-bench rtt pubsub fanout conns --count 50 --json exits 0"
else
        cat "$dir/small.err" "$dir/small.json" >"$dir/small.all"
        fail "busd-bench rtt pubsub fanout conns --count 50 --json exits 0" "$dir/small.all"
fi
figures "$dir/small.json" >"$dir/small.figures"
: >"$dir/small.bad"
for name in rtt.busd_p50_us rtt.relay2_p50_us rtt.direct1_p50_us pubsub.busd_msgs_per_s \
        pubsub.relay_msgs_per_s fanout.per_delivery_ns_n1 fanout.per_delivery_ns_n64 \
        conns.count conns.rss_per_conn_bytes; do
        awk -v n="$name" '$1 == n && $2 != "null" && $2 + 0 > 0 { found = 1 } END { exit !found }' \
                "$dir/small.figures" || echo "$name missing, null or not above zero" >>"$dir/small.bad"
done
for name in pubsub.lost fanout.lost; do
        grep -qx "$name 0" "$dir/small.figures" || echo "$name is not 0" >>"$dir/small.bad"
done
if [ -s "$dir/small.bad" ]; then
        fail "rtt, pubsub, fanout and conns figures are there, nothing lost" "$dir/small.bad"
else
        pass "rtt, pubsub, fanout and conns figures are there, nothing lost"
fi

# cpu runs busd under callgrind: not with sanitizers, not without valgrind.
if [ -n "${BUSD_SANITIZERS:-}" ] || ! command -v callgrind_control >/dev/null 2>&1; then
        echo "ok 10 - cpu counts instructions # SKIP needs valgrind and a build without sanitizers"
        n=$((n + 1))
elif BUSD_CPU_COUNT="${BUSD_SRCDIR:-.}/tools/busd-cpu-count" \
        "$bench" cpu --count 50 --json >"$dir/cpu.json" 2>"$dir/cpu.err" &&
        figures "$dir/cpu.json" | awk '($1 == "cpu.instr_per_publish" || $1 == "cpu.instr_per_call") &&
                $2 != "null" && $2 + 0 > 0 { ok++ } END { exit ok != 2 }'; then
        pass "cpu counts instructions per publish and per call"
else
        cat "$dir/cpu.err" "$dir/cpu.json" >"$dir/cpu.all"
        fail "cpu counts instructions per publish and per call" "$dir/cpu.all"
fi

exit $failed
