#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Builds busd, starts it on the per-user bus and shows it working:
#   1. installs missing Debian packages (tools/deps.sh),
#   2. builds out of tree in build/ (nothing is installed),
#   3. starts build/busd/busd in the background on the default address, or
#      reuses a busd already listening there, and waits until it accepts
#      connections,
#   4. runs build/tools/busd-example: a subscriber receiving two publishes,
#      and a service answering a call, and looks at the bus with busdctl,
#   5. prints how to use the bus and how to stop it.
# Running it again rebuilds what changed and reuses the running busd.
set -euo pipefail

srcdir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
builddir=$srcdir/build
# How to show build/ to the user: relative when they stand in the tree.
if [[ $PWD == "$srcdir" ]]; then show=build; else show=$builddir; fi

say() { printf '\n==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
die() { printf 'quickstart: %s\n' "$*" >&2; exit 1; }

# Configures dir with the given configure arguments, unless it already is
# (make itself reruns autotools when configure.ac or Makefile.am change).
ensure_configured() {
        local dir=$1 have
        shift
        if [[ ! -x $srcdir/configure || ! -f $srcdir/build-aux/tap-driver.sh ]]; then
                (cd "$srcdir" && NOCONFIGURE=1 ./autogen.sh)
        fi
        [[ ! -f $srcdir/config.status ]] ||
                die "$srcdir is configured in place; run 'make distclean' there first (builds go to build/)"
        mkdir -p "$dir"
        if [[ -f $dir/Makefile && -x $dir/config.status ]]; then
                have=$("$dir/config.status" --config | tr -d "'")
                [[ $have == "$*" ]] && return 0
        fi
        (cd "$dir" && "$srcdir/configure" "$@")
}

# wait_listening ADDRESS SECONDS [PID]: succeeds as soon as a connect() to
# ADDRESS works; fails when SECONDS pass or process PID is gone. perl-base is
# part of every Debian system, and the shell cannot connect to a UNIX socket.
wait_listening() {
        perl -MSocket -e '
                my ($addr, $timeout, $pid) = @ARGV;
                $addr =~ s/^@/\0/;      # abstract socket
                my $deadline = time + $timeout;
                for (;;) {
                        socket(my $s, AF_UNIX, SOCK_STREAM, 0) or die "socket: $!\n";
                        exit 0 if connect($s, pack_sockaddr_un($addr));
                        close $s;
                        exit 1 if time >= $deadline;
                        if ($pid) {
                                open(my $st, "<", "/proc/$pid/stat") or exit 2;
                                exit 2 if <$st> =~ /\) Z /;     # exited, not yet reaped
                        }
                        select(undef, undef, undef, 0.02);
                }' "$@"
}

# Whether pid $1 is a live busd (a zombie is not).
is_busd() {
        local stat
        [[ $1 =~ ^[0-9]+$ && $(cat "/proc/$1/comm" 2>/dev/null) == busd ]] || return 1
        stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
        [[ $stat != *") Z "* ]]
}

say "Checking build dependencies (tools/deps.sh)"
bash "$srcdir/tools/deps.sh"

say "Building in $show/ (out of tree; nothing is installed)"
ensure_configured "$builddir"
make -C "$builddir" -j"$(nproc)"
busd=$builddir/busd/busd
example=$builddir/tools/busd-example
busdctl=$builddir/tools/busdctl/busdctl
[[ -x $busd ]] || die "$busd was not built"
[[ -x $busdctl ]] || die "$busdctl was not built"
[[ -x $example ]] || die "$example was not built"

# The per-user default, exactly as busd and libbus compute it.
if [[ ${XDG_RUNTIME_DIR-} == /* ]]; then
        address=$XDG_RUNTIME_DIR/busd/bus
else
        address=/tmp/busd-$(id -u)/bus
fi
export BUSD_ADDRESS=$address
pidfile=$builddir/busd.pid
logfile=$builddir/busd.log

say "Starting busd on the per-user bus $address"
pid=
if wait_listening "$address" 0; then
        if [[ -f $pidfile ]] && is_busd "$(<"$pidfile")"; then
                pid=$(<"$pidfile")
                note "busd (pid $pid) is already listening there; reusing it."
        else
                rm -f "$pidfile"
                note "A bus is already listening there, not started by this script (its pid"
                note "is not in $show/busd.pid); reusing it."
        fi
else
        if [[ -f $pidfile ]] && is_busd "$(<"$pidfile")"; then
                note "$show/busd.pid names busd pid $(<"$pidfile"), which does not listen on"
                note "$address; leaving it alone."
        fi
        : >"$logfile"
        # setsid: busd must not die with this terminal or a Ctrl-C here.
        setsid "$busd" </dev/null >>"$logfile" 2>&1 &
        pid=$!
        echo "$pid" >"$pidfile"
        if ! wait_listening "$address" 10 "$pid"; then
                echo "busd did not start listening on $address; its log ($show/busd.log):" >&2
                sed 's/^/    /' "$logfile" >&2
                kill "$pid" 2>/dev/null || true
                rm -f "$pidfile"
                exit 1
        fi
        note "busd (pid $pid) accepts connections; it logs to $show/busd.log."
fi

# The examples run in the background with their output on a FIFO, so this
# script can wait for each to be ready by reading its first line, with a
# deadline, instead of sleeping.
tmp=$(mktemp -d "${TMPDIR:-/tmp}/busd-quickstart.XXXXXX")
children=()
cleanup() {
        local p
        for p in "${children[@]}"; do
                kill "$p" 2>/dev/null || true
                wait "$p" 2>/dev/null || true
        done
        rm -rf "$tmp"
}
trap cleanup EXIT

# start_example NAME ARGS...: runs busd-example ARGS in the background with
# its output on a FIFO; sets ex_pid and ex_fd (the FIFO's read end).
start_example() {
        local fifo=$tmp/$1.fifo
        shift
        mkfifo "$fifo"
        # stdbuf: each line leaves the example as soon as it is printed.
        timeout 30 stdbuf -oL -eL "$example" "$@" >"$fifo" 2>&1 &
        ex_pid=$!
        children+=("$ex_pid")
        exec {ex_fd}<"$fifo"
}

# show_lines FD PREFIX SECONDS: prints what arrives on FD until EOF, or until
# nothing came for SECONDS.
show_lines() {
        local line
        while IFS= read -r -t "$3" -u "$1" line; do
                note "$2$line"
        done
}

say "Publish/subscribe"
# The first message is retained, so it reaches the subscriber however the two
# processes race; the subscriber's first line therefore also shows that its
# subscription is in place, and the second, live message cannot be missed.
note "A retained publish: the broker keeps the last retained message of a topic"
note "and hands it to each new subscriber first."
note "  busd-example pub demo.greeting 'Hello from the quickstart' --retain"
"$example" pub demo.greeting 'Hello from the quickstart' --retain || die "publishing failed"
note "A subscriber on the pattern 'demo.>' (every topic below demo.), which exits"
note "after 2 messages:  busd-example sub 'demo.>' 2"
start_example sub sub 'demo.>' 2
sub_pid=$ex_pid sub_fd=$ex_fd
if IFS= read -r -t 10 -u "$sub_fd" line; then
        note "  subscriber| $line"
else
        note "(the subscriber said nothing for 10 s; publishing anyway)"
fi
note "A live publish from another process reaches every current subscriber:"
note "  busd-example pub demo.kitchen.temperature 21.5"
"$example" pub demo.kitchen.temperature 21.5 || die "publishing failed"
show_lines "$sub_fd" "  subscriber| " 10
status=0
wait "$sub_pid" || status=$?
exec {sub_fd}<&-
((status == 0)) || die "the subscriber exited with status $status"
note "A retained publish with an empty payload deletes the retained message:"
note "  busd-example pub demo.greeting '' --retain"
"$example" pub demo.greeting '' --retain || die "publishing failed"

say "Request/reply"
note "A service claims the name org.example.Demo and answers methods Echo, Upper"
note "and Fail:  busd-example serve org.example.Demo"
start_example serve serve org.example.Demo
serve_pid=$ex_pid serve_fd=$ex_fd
# Its first line says it owns the name.
if IFS= read -r -t 10 -u "$serve_fd" line; then
        note "  service| $line"
else
        note "(the service said nothing for 10 s; calling anyway)"
fi
note "A caller asks it to upper-case a text; the broker routes the request by name"
note "and the reply back:  busd-example call org.example.Demo Upper 'hello, bus'"
status=0
"$example" call org.example.Demo Upper 'hello, bus' >"$tmp/upper.out" 2>&1 || status=$?
sed 's/^/      caller| /' "$tmp/upper.out"
((status == 0)) || die "the Upper call failed (exit status $status)"
note "Errors travel back too (Fail always fails; the caller exits non-zero):"
note "  busd-example call org.example.Demo Fail 'anything'"
status=0
"$example" call org.example.Demo Fail 'anything' >"$tmp/fail.out" 2>&1 || status=$?
sed 's/^/      caller| /' "$tmp/fail.out"
note "  (exit status $status)"
((status != 0)) || die "the Fail call should have failed"

say "Inspecting the bus with busdctl"
note "busdctl status"
"$busdctl" status | sed 's/^/      /' || die "busdctl status failed"
note "busdctl list   (the peers: the service above and busdctl itself)"
"$busdctl" list | sed 's/^/      /' || die "busdctl list failed"
note "busdctl call bus GetNameOwner '{\"name\": \"org.example.Demo\"}'"
"$busdctl" call bus GetNameOwner '{"name": "org.example.Demo"}' | sed 's/^/      /' ||
        die "busdctl call failed"
kill "$serve_pid" 2>/dev/null || true
show_lines "$serve_fd" "  service| " 10
wait "$serve_pid" 2>/dev/null || true
exec {serve_fd}<&-

say "busd is running"
if [[ -n $pid ]]; then
        note "pid $pid (in $show/busd.pid), log in $show/busd.log, bus at $address."
else
        note "Bus at $address (that busd was not started here)."
fi
note "Programs using libbus find it by default; to point them (or a shell) at it"
note "explicitly:"
note "    export BUSD_ADDRESS=$address"
note "Try it from two terminals:"
note "    $show/tools/busd-example sub 'demo.>'"
note "    $show/tools/busd-example pub demo.hello 'hi there'"
note "    $show/tools/busd-example serve org.example.Demo"
note "    $show/tools/busd-example call org.example.Demo Echo 'ping'"
note "Look at it, and watch its traffic (see man/busdctl.1):"
note "    $show/tools/busdctl/busdctl list"
note "    $show/tools/busdctl/busdctl monitor"
if [[ -n $pid ]]; then
        note "Stop it with:"
        note "    kill \$(cat $show/busd.pid)"
fi
