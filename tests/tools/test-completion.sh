#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# The bash completion of busdctl (tools/busdctl/completion/busdctl), run
# inside bash-completion's own framework the way bash runs it: COMP_WORDS
# split at COMP_WORDBREAKS, then the completion function, then COMPREPLY.
# Needs no broker: what would come from the bus comes from a stand-in
# "busdctl" on PATH that answers "__complete" with fixed lists (one entry of
# which is a shell command substitution, which must never run), and a
# busdctl that fails must cost nothing but an empty list. Speaks TAP.
set -u

framework=/usr/share/bash-completion/bash_completion
if [ ! -r "$framework" ]; then
        echo "1..0 # SKIP $framework is missing (install bash-completion)"
        exit 0
fi

srcdir=${BUSD_SRCDIR:-$(cd "$(dirname "$0")/../.." && pwd)}
script=$srcdir/tools/busdctl/completion/busdctl

dir=$(mktemp -d "${TMPDIR:-/tmp}/test-completion.XXXXXX") || exit 1
trap 'rm -rf "$dir"' EXIT

# A stand-in busdctl: logs its arguments, says something on stderr (which
# must not reach the terminal), answers __complete.
mkdir "$dir/bin" "$dir/bin-failing" "$dir/bin-none" "$dir/files"
cat >"$dir/bin/busdctl" <<EOF
#!/bin/sh
printf '%s\n' "\$*" >>"$dir/calls"
echo "busdctl: some noise" >&2
case "\$*" in
*"__complete names") printf '%s\n' org.example.Calc org.example.Log :1.7 :1.12 bus ;;
*"__complete topics")
        printf '%s\n' 'example.readings.>' example.readings.kitchen 'sensors.*.temp' \
                '\$(touch $dir/pwned)' ;;
*"__complete methods org.example.Calc") printf '%s\n' Add Divide Stats ;;
*"__complete types org.example.Calc") printf '%s\n' example.AddRequest example.AddReply ;;
*) exit 2 ;;
esac
EOF
cat >"$dir/bin-failing/busdctl" <<'EOF'
#!/bin/sh
echo "busdctl: cannot connect to the bus" >&2
exit 1
EOF
chmod +x "$dir/bin/busdctl" "$dir/bin-failing/busdctl"
touch "$dir/files/one.cap" "$dir/files/two.cap" "$dir/files/calc.desc"

# Nothing here may reach a real bus.
export BUSD_ADDRESS=$dir/no-bus
base_path=$PATH

# shellcheck disable=SC1090
source "$framework"
# shellcheck disable=SC1090
source "$script"

# complete LINE: completes at the end of LINE (bash's word splitting: at
# blanks, and COMP_WORDBREAKS characters as words of their own); prints the
# candidates sorted, on one line. stderr goes to $dir/stderr.
complete_line() {
        local line=$1 word='' c i
        COMP_WORDS=()
        for ((i = 0; i < ${#line}; i++)); do
                c=${line:i:1}
                if [[ $c == ' ' ]]; then
                        [[ -n $word ]] && COMP_WORDS+=("$word")
                        word=
                elif [[ $c == [=:\>\<] ]]; then
                        [[ -n $word ]] && COMP_WORDS+=("$word")
                        COMP_WORDS+=("$c")
                        word=
                else
                        word+=$c
                fi
        done
        if [[ -n $word ]]; then
                COMP_WORDS+=("$word")
        elif [[ $line == *' ' ]]; then
                COMP_WORDS+=("")
        fi
        COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
        COMP_LINE=$line
        COMP_POINT=${#line}
        COMPREPLY=()
        _busdctl busdctl "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}" 2>>"$dir/stderr"
        printf '%s\n' "${COMPREPLY[@]}" | LC_ALL=C sort | tr '\n' ' ' | sed 's/ $//'
}

n=0
failed=0
# check DESCRIPTION LINE EXPECTED: the candidates for LINE are exactly EXPECTED.
check() {
        local got
        got=$(complete_line "$2")
        n=$((n + 1))
        if [[ $got == "$3" ]]; then
                echo "ok $n - $1"
        else
                failed=1
                echo "not ok $n - $1"
                echo "#   line:     '$2'"
                echo "#   expected: '$3'"
                echo "#   got:      '$got'"
        fi
}
# check_contains DESCRIPTION LINE WORD...: the candidates include each WORD.
check_contains() {
        local desc=$1 line=$2 got w missing=
        shift 2
        got=" $(complete_line "$line") "
        for w in "$@"; do
                [[ $got == *" $w "* ]] || missing+=" $w"
        done
        n=$((n + 1))
        if [[ -z $missing ]]; then
                echo "ok $n - $desc"
        else
                failed=1
                echo "not ok $n - $desc"
                echo "#   missing:$missing"
                echo "#   got:    '$got'"
        fi
}
# ok DESCRIPTION COMMAND...: passes if COMMAND succeeds.
ok() {
        local desc=$1
        shift
        n=$((n + 1))
        if "$@"; then
                echo "ok $n - $desc"
        else
                failed=1
                echo "not ok $n - $desc"
        fi
}

echo "1..30"
cd "$dir/files" || exit 1

# ---- no busdctl able to answer: commands, options, values and files still work
PATH=$dir/bin-none:$base_path
check "command names" "busdctl s" "show stats status sub subscriptions"
check "command names after global options" "busdctl -A /tmp/x.sock --json ca" "call capture"
check "every command from nothing" "busdctl " \
        "call capture introspect list monitor names pub replay show stats status sub subscriptions wait"
check "long options" "busdctl --d" "--descriptors --duration"
check "a long option after the command and its arguments" "busdctl call org.example.Calc Add --ti" "--timeout"
check_contains "short and long options from a dash" "busdctl monitor -" -A -D -T -f -h -j -n -q -t \
        --address --json --kind --name --no-legend --quiet --raw --realtime --topic --version
check "--kind values" "busdctl monitor --kind " "error publish reply request"
check "--kind=VALUE" "busdctl monitor --kind=re" "reply request"
check "--kind before the command" "busdctl --kind p" "publish"
check "capture FILE: files" "busdctl capture t" "two.cap"
check "show FILE: files" "busdctl show --json " "calc.desc one.cap two.cap"
check "replay FILE: files" "busdctl replay o" "one.cap"
check "--descriptors FILE: files" "busdctl call --descriptors c" "calc.desc"
check "-D FILE: files" "busdctl -D c" "calc.desc"
check "--file=FILE: files" "busdctl pub x --file=o" "one.cap"
check "the option's argument is not taken for a command" "busdctl --timeout 5 sta" "stats status"
check "no option names after --" "busdctl -- --j" ""

PATH=$dir/bin-failing:$base_path
: >"$dir/stderr"
check "a failing busdctl: no names, nothing else" "busdctl call " ""
check "a failing busdctl: no topics" "busdctl sub " ""
ok "a failing busdctl writes nothing to the terminal" test ! -s "$dir/stderr"

# ---- a busdctl that answers
PATH=$dir/bin:$base_path
: >"$dir/stderr"
check "call NAME: names from the bus" "busdctl call org.example.C" "org.example.Calc"
check "call NAME: unique ids, through the colon" "busdctl call :1.1" "1.12"
check "call NAME METHOD: that service's methods" "busdctl call org.example.Calc D" "Divide"
check "--type: the types of the service called" "busdctl call org.example.Calc Add --type example.AddR" \
        "example.AddReply example.AddRequest"
check "--type without a service: nothing" "busdctl pub example.x --type " ""
check "wait NAME: well-known names only" "busdctl wait " "org.example.Calc org.example.Log"
check "sub PATTERN: topics and patterns, text taken as it is" "busdctl sub " \
        "\$(touch $dir/pwned) example.readings.> example.readings.kitchen sensors.*.temp"
check "pub TOPIC: no patterns" "busdctl pub example." "example.readings.kitchen"
: >"$dir/calls"
check "monitor --name: names, asked on the bus of -A" "busdctl -A /tmp/other.sock monitor --name org.example.L" \
        "org.example.Log"
address_passed_and_nothing_ran() {
        grep -qx -- "--address=/tmp/other.sock __complete names" "$dir/calls" &&
                test ! -e "$dir/pwned" && test ! -s "$dir/stderr"
}
ok "the bus of -A/--address is passed on, bus output never runs, nothing on the terminal" \
        address_passed_and_nothing_ran

exit $failed
