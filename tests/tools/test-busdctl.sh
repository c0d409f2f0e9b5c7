#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# busdctl against a real busd and a real typed service (tests/tools/
# calc-service, serving example.Calc of tests/tools/calc.proto): its output
# and exit codes for every command, JSON in and out through the service's own
# descriptors, pub/sub, monitor, capture/show/replay, and bad input. Speaks TAP.
set -u

: "${BUSD_BUILDDIR:?set by the Makefile}"
: "${BUSD_BINARY:?set by the Makefile}"
ctl=$BUSD_BUILDDIR/tools/busdctl/busdctl
calc=$BUSD_BUILDDIR/tests/tools/calc-service

dir=$(mktemp -d "${TMPDIR:-/tmp}/test-busdctl.XXXXXX") || exit 1
pids=
cleanup() {
        for p in $pids; do
                kill "$p" 2>/dev/null
        done
        wait 2>/dev/null
        rm -rf "$dir"
}
trap cleanup EXIT

n=0
failed=0
pass() {
        n=$((n + 1))
        echo "ok $n - $1"
}
fail() { # description [files to show...]
        n=$((n + 1))
        failed=1
        echo "not ok $n - $1"
        shift
        for f in "$@"; do
                [ -f "$f" ] && sed "s|^|# $(basename "$f"): |" "$f"
        done
}

# check DESCRIPTION EXPECTED-STATUS PATTERN -- COMMAND...: runs COMMAND with
# stdout to $dir/out and stderr to $dir/err; passes if it exits with
# EXPECTED-STATUS and PATTERN (grep -E, empty: anything) is in out+err.
check() {
        desc=$1 want=$2 pattern=$3
        shift 4
        "$@" >"$dir/out" 2>"$dir/err"
        status=$?
        cat "$dir/out" "$dir/err" >"$dir/all"
        if [ "$status" -ne "$want" ]; then
                echo "# exit status $status, wanted $want: $*" >>"$dir/all"
                fail "$desc" "$dir/all"
        elif [ -n "$pattern" ] && ! grep -Eq -- "$pattern" "$dir/all"; then
                echo "# no match for: $pattern" >>"$dir/all"
                fail "$desc" "$dir/all"
        else
                pass "$desc"
        fi
}

# until_grep FILE PATTERN [SECONDS]: waits until PATTERN is in FILE.
until_grep() {
        i=0
        while [ "$i" -lt $((${3:-10} * 20)) ]; do
                grep -Eq -- "$2" "$1" 2>/dev/null && return 0
                sleep 0.05
                i=$((i + 1))
        done
        return 1
}

# until_gone PID [SECONDS]: waits until the process has exited.
until_gone() {
        i=0
        while [ "$i" -lt $((${2:-10} * 20)) ]; do
                kill -0 "$1" 2>/dev/null || return 0
                sleep 0.05
                i=$((i + 1))
        done
        return 1
}

# ---- without a broker
check "--help lists the commands" 0 '^  monitor ' -- "$ctl" --help
check "no command is a usage error (2)" 2 'no command given' -- "$ctl"
check "an unknown command is a usage error (2)" 2 'unknown command: frobnicate' -- "$ctl" frobnicate
check "too many arguments are a usage error (2)" 2 'status takes 0 arguments' -- "$ctl" status extra
check "no broker: status fails (1) and says where it looked" 1 "cannot connect to the bus at $dir/none" -- \
        "$ctl" --address "$dir/none" status

# ---- a broker and a typed service
export BUSD_ADDRESS="$dir/bus"
"$BUSD_BINARY" --address "$BUSD_ADDRESS" 2>"$dir/busd.log" &
busd=$!
pids="$pids $busd"
i=0
while [ ! -S "$BUSD_ADDRESS" ] && [ "$i" -lt 200 ]; do
        sleep 0.05
        i=$((i + 1))
done

check "status shows the broker" 0 '^Broker: +busd ' -- "$ctl" status
check "wait for a name that never comes times out (1)" 1 'timed out waiting for org.example.Calc' -- \
        "$ctl" wait --timeout 0.3 org.example.Calc

"$calc" --address "$BUSD_ADDRESS" 2>"$dir/calc.log" &
calc_pid=$!
pids="$pids $calc_pid"
check "wait returns once the service owns its name" 0 '^:1\.[0-9]+$' -- \
        "$ctl" wait --timeout 10 org.example.Calc
owner=$(cat "$dir/out")

check "names shows the service's name and owner" 0 "^org\.example\.Calc +$owner " -- "$ctl" names
check "list shows the service's command line" 0 "^$owner .*calc-service --address" -- "$ctl" list
check "list --json is a JSON array with pids" 0 '^\[\{"unique_id":":1\.[0-9]+",.*"pid":[1-9]' -- "$ctl" --json list
check "subscriptions lists calc-service's pattern" 0 "^$owner +[0-9]+ +example\.readings\.>" -- \
        "$ctl" subscriptions
check "stats --json has every counter" 0 '"messages_routed":[0-9]+.*"dropped":0' -- "$ctl" stats --json

# ---- calls with JSON, through the service's descriptors
check "call Add with JSON prints the reply as JSON" 0 '^\{"sum":5\}$' -- \
        "$ctl" call org.example.Calc Add '{"a": 2, "b": 3}'
check "call takes field names and numbers as strings" 0 '^\{"sum":-1\}$' -- \
        "$ctl" call org.example.Calc Add '{"a": "-4", "b": 3}'
check "call Divide: a double reply" 0 '^\{"quotient":2\.5\}$' -- \
        "$ctl" call org.example.Calc Divide '{"dividend": 5, "divisor": 2}'
check "an error reply: its name and message, exit 1" 1 \
        '^busdctl: example\.Calc\.Error\.DivByZero: division by zero$' -- \
        "$ctl" call org.example.Calc Divide '{"dividend": 1, "divisor": 0}'
check "bad JSON: a clear message, exit 2" 2 'bad JSON' -- "$ctl" call org.example.Calc Add '{"a": '
check "an unknown field: exit 2, naming it" 2 'unknown field.*"c"' -- \
        "$ctl" call org.example.Calc Add '{"c": 1}'
check "a string for an int32: exit 2" 2 'field "a"' -- "$ctl" call org.example.Calc Add '{"a": "two"}'
check "an unknown method: bus.Error.UnknownMethod, exit 1" 1 'bus\.Error\.UnknownMethod' -- \
        "$ctl" call org.example.Calc Nope
check "a name nobody owns: bus.Error.NoOwner, exit 1" 1 'bus\.Error\.NoOwner' -- \
        "$ctl" call org.example.Nobody Add
check "calling the broker: ListNames as JSON" 0 '"name":"org\.example\.Calc"' -- \
        "$ctl" call bus ListNames
check "introspect lists the methods with their types" 0 'rpc Divide\(example\.DivideRequest\) returns \(example\.DivideReply\)' -- \
        "$ctl" introspect org.example.Calc
check "introspect shows the message fields" 0 'map<string, uint64> by_method = 2;' -- \
        "$ctl" introspect org.example.Calc
check "introspect --json names the service and the topic type" 0 \
        '"name":"example\.Calc".*"pattern":"example\.readings\.>","type":"example\.Reading"' -- \
        "$ctl" --json introspect org.example.Calc
check "introspect bus describes the broker" 0 'rpc ListPeers\(bus\.ListPeersRequest\)' -- \
        "$ctl" introspect bus

# ---- pub and sub
rm -f "$dir/sub.out" "$dir/sub.err" # a stale file would fool until_grep
"$ctl" sub 'example.readings.>' --count 1 --json >"$dir/sub.out" 2>"$dir/sub.err" &
sub=$!
pids="$pids $sub"
until_grep "$dir/sub.err" 'subscribed to'
check "pub with JSON: the type comes from the topic's announced type" 0 '' -- \
        "$ctl" pub example.readings.kitchen '{"sensor": "kitchen", "value": 21.5, "unit": "UNIT_CELSIUS", "tags": ["a", "b"]}'
until_gone "$sub"
if grep -q '"topic":"example\.readings\.kitchen".*"payload_type":"example\.Reading".*"payload":{"sensor":"kitchen","value":21\.5,"unit":"UNIT_CELSIUS","takenUsec":"0","tags":\["a","b"\]}' "$dir/sub.out"; then
        pass "sub --count 1 printed the message decoded and exited"
else
        fail "sub --count 1 printed the message decoded and exited" "$dir/sub.out" "$dir/sub.err"
fi
check "the service decoded what busdctl encoded (Stats: last reading, calls by method)" 0 \
        '"byMethod":\{.*"Add":"2".*"lastReading":\{"sensor":"kitchen","value":21\.5' -- \
        "$ctl" call org.example.Calc Stats
check "pub of JSON on a topic without a type: exit 2" 2 'no peer announces a type for other\.topic' -- \
        "$ctl" pub other.topic '{"x": 1}'
check "pub on the broker's topics is refused: exit 2" 2 'bad topic: bus\.peer\.x' -- \
        "$ctl" pub bus.peer.x --raw=hi

rm -f "$dir/sub.out" "$dir/sub.err" # a stale file would fool until_grep
"$ctl" sub 'raw.>' --count 1 >"$dir/sub.out" 2>"$dir/sub.err" &
sub=$!
pids="$pids $sub"
until_grep "$dir/sub.err" 'subscribed to'
"$ctl" pub raw.text --raw='hello there'
until_gone "$sub"
if grep -q '^PUBLISH :1\.[0-9]* → raw\.text 11 B {"@text":"hello there"}' "$dir/sub.out"; then
        pass "an untyped text payload is printed as text"
else
        fail "an untyped text payload is printed as text" "$dir/sub.out" "$dir/sub.err"
fi

check "pub --retain keeps the message for a later subscriber" 0 '' -- "$ctl" pub keep.x --retain --raw=kept
check "sub gets the retained message first, marked retain" 0 '"topic":"keep\.x".*"retain":true,"payload":\{"@text":"kept"\}' -- \
        "$ctl" sub 'keep.>' --count 1 --json

# ---- monitor and capture
"$ctl" monitor --json --name org.example.Calc --topic 'example.>' >"$dir/mon.out" 2>"$dir/mon.err" &
mon=$!
"$ctl" capture "$dir/capture" --name org.example.Calc --topic 'example.>' 2>"$dir/cap.err" &
cap=$!
pids="$pids $mon $cap"
until_grep "$dir/mon.err" 'monitoring'
until_grep "$dir/cap.err" 'monitoring'
"$ctl" call org.example.Calc Add '{"a": 20, "b": 22}' >/dev/null
"$ctl" pub example.readings.hall '{"sensor": "hall", "value": 19}'
until_grep "$dir/mon.out" '"topic":"example\.readings\.hall"'
until_grep "$dir/capture" 'example\.readings\.hall' # topics are plain bytes in the file
kill "$mon" "$cap"
until_gone "$mon"
until_gone "$cap"
if grep -q '"kind":"REQUEST","sender":":1\.[0-9]*".*"destination":"org\.example\.Calc","receiver":"'"$owner"'".*"method":"Add".*"payload":{"a":20,"b":22}' "$dir/mon.out"; then
        pass "monitor saw the request, decoded"
else
        fail "monitor saw the request, decoded" "$dir/mon.out" "$dir/mon.err"
fi
if grep -q '"kind":"REPLY","sender":"'"$owner"'".*"payload":{"sum":42}' "$dir/mon.out"; then
        pass "monitor saw the reply, decoded"
else
        fail "monitor saw the reply, decoded" "$dir/mon.out"
fi
if grep -q '"kind":"PUBLISH".*"receivers":1,"topic":"example\.readings\.hall".*"payload":{"sensor":"hall","value":19' "$dir/mon.out"; then
        pass "monitor saw the publish with its receiver count, decoded"
else
        fail "monitor saw the publish with its receiver count, decoded" "$dir/mon.out"
fi

# show reads the file alone: no bus needed, the descriptors are in it
check "show prints the captured call and publish, decoded without a bus" 0 \
        'REQUEST +:1\.[0-9]+ → org\.example\.Calc \(:1\.[0-9]+\) Add #[0-9]+ example\.AddRequest 4 B \{"a":20,"b":22\}' -- \
        env BUSD_ADDRESS="$dir/none" "$ctl" show "$dir/capture"
check "show --kind publish --json filters" 0 '^\{.*"kind":"PUBLISH".*"sensor":"hall"' -- \
        env BUSD_ADDRESS="$dir/none" "$ctl" show --json --kind publish "$dir/capture"

rm -f "$dir/sub.out" "$dir/sub.err" # a stale file would fool until_grep
"$ctl" sub 'example.readings.hall' --count 1 --json >"$dir/sub.out" 2>"$dir/sub.err" &
sub=$!
pids="$pids $sub"
until_grep "$dir/sub.err" 'subscribed to'
check "replay sends the publish and the request again" 0 '^Replayed 2 messages; skipped [0-9]+' -- \
        "$ctl" replay "$dir/capture"
until_gone "$sub"
if grep -q '"payload":{"sensor":"hall","value":19' "$dir/sub.out"; then
        pass "a subscriber got the replayed publish"
else
        fail "a subscriber got the replayed publish" "$dir/sub.out" "$dir/sub.err"
fi

printf 'not a capture' >"$dir/garbage"
check "show of a file that is not a capture: exit 1" 1 'is not a busdctl capture file' -- \
        "$ctl" show "$dir/garbage"
head -c 60 "$dir/capture" >"$dir/truncated"
check "show of a truncated capture says where, exit 1" 1 'record at byte [0-9]+ is truncated' -- \
        "$ctl" show "$dir/truncated"

# ---- the broker is unharmed
kill "$calc_pid"
until_gone "$calc_pid"
check "the broker still answers, with no drops" 0 '^Dropped: +0$' -- "$ctl" status

kill "$busd"
until_gone "$busd"
echo "1..$n"
exit $failed
