#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Runs the whole test suite, as the README and CI (.ci/run) do:
#   1. installs missing Debian packages (tools/deps.sh),
#   2. build/: configure, make, make check,
#   3. build-sanitizers/: configure --enable-sanitizers, make, make check,
#   4. build/: make distcheck, with --distcheck or when $CI is set (not with
#      --no-distcheck).
# Every stage runs even when an earlier one failed. When a build fails, the
# tests that could still be built are run. At the end come the failed tests'
# logs (their last lines), then the totals of both test runs, counted in TAP
# test points, as the last line:
#   N passed, N failed
# (FAIL, XPASS and ERROR count as failed; a stage that failed outside a test
# counts as one failed.) Exits 1 if anything failed.
#
# Environment: RUN_TESTS_CHECK_TIMEOUT / RUN_TESTS_DISTCHECK_TIMEOUT bound each
# make check / make distcheck (timeout(1) durations; default 15m / 30m).
set -uo pipefail   # not -e: a failing stage must not stop the others

srcdir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
jobs=$(nproc)
check_jobs=2
check_timeout=${RUN_TESTS_CHECK_TIMEOUT:-15m}
distcheck_timeout=${RUN_TESTS_DISTCHECK_TIMEOUT:-30m}
tail_lines=40

distcheck=false
[[ -n ${CI-} ]] && distcheck=true
for arg in "$@"; do
        case $arg in
        --distcheck) distcheck=true ;;
        --no-distcheck) distcheck=false ;;
        -h | --help) awk 'NR > 3 && !/^#/ { exit } NR > 3 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
        *) echo "run-tests.sh: unknown argument: $arg (try --help)" >&2; exit 2 ;;
        esac
done

passed=0 failed=0 skipped=0
summary=()      # one line per stage
failed_logs=()  # .log files of failed tests

say() { printf '\n==> %s\n' "$*"; }
rel() { printf '%s' "${1#"$srcdir"/}"; }
stage_ok() { summary+=("ok    $1"); }
stage_failed() {
        summary+=("FAIL  $1")
        failed=$((failed + 1))
}

# Prints the value of a make variable of the Makefile in dir.
make_var() {
        make -s --no-print-directory -C "$1" -f Makefile -f - run-tests-print-var <<EOF
run-tests-print-var:
	@echo \$($2)
EOF
}

# configure_dir DIR ARGS...: configures DIR unless it already is, with the same
# arguments (make reruns autotools itself when configure.ac or Makefile.am change).
configure_dir() {
        local dir=$1 have
        shift
        mkdir -p "$dir" || return 1
        if [[ -f $dir/Makefile && -x $dir/config.status ]]; then
                have=$("$dir/config.status" --config | tr -d "'")
                [[ $have == "$*" ]] && return 0
        fi
        (cd "$dir" && "$srcdir/configure" "$@")
}

# Adds a test-suite.log's totals (test points, as the TAP driver counts them)
# and the failed tests among "$@" (test names) to the results.
collect_results() {
        local dir=$1 label=$2 p f s t
        shift 2
        read -r p f s < <(awk '
                /^# (PASS|XFAIL): / { p += $3 }
                /^# (FAIL|XPASS|ERROR): / { f += $3 }
                /^# SKIP: / { s += $3 }
                /^# ERROR: / { exit }   # the end of the totals
                END { print p + 0, f + 0, s + 0 }' "$dir/test-suite.log")
        passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
        summary+=("$( ((f == 0)) && echo 'ok  ' || echo 'FAIL')  make check in $label: $p passed, $f failed, $s skipped")
        for t in "$@"; do
                if grep -Eq '^:global-test-result: (FAIL|XPASS|ERROR)' "$dir/$t.trs" 2>/dev/null; then
                        failed_logs+=("$dir/$t.log")
                fi
        done
}

# Tests whose run started but did not finish (a .log but no .trs).
note_unfinished() {
        local dir=$1 t
        shift
        for t in "$@"; do
                if [[ -f $dir/$t.log && ! -f $dir/$t.trs ]]; then
                        summary+=("      did not finish: $(rel "$dir/$t")")
                        failed_logs+=("$dir/$t.log")
                fi
        done
}

# run_check DIR LABEL BUILT [WRAPPER...]: make check in DIR; BUILT says
# whether make all succeeded there (if not, only the tests that build are run).
run_check() {
        local dir=$1 label=$2 built=$3 tests rc t runnable=() unbuilt=() have_busd
        shift 3
        read -ra tests <<<"$(make_var "$dir" TESTS)"
        rm -f "$dir/test-suite.log"
        if $built; then
                say "make check in $label"
                timeout -k 30 "$check_timeout" "$@" make -C "$dir" -j"$check_jobs" check
                rc=$?
        else
                rc=1
        fi
        if [[ -f $dir/test-suite.log ]]; then
                collect_results "$dir" "$label" "${tests[@]}"
                # Test failures make make fail too; anything else is worth a line.
                if ((rc != 0)) && [[ ${summary[-1]} == ok* ]]; then
                        stage_failed "make check in $label exited with status $rc"
                fi
                return
        fi
        if ((rc == 124 || rc == 137)); then
                stage_failed "make check in $label: timed out after $check_timeout"
                note_unfinished "$dir" "${tests[@]}"
                return
        fi

        # The tests did not all build: run those that did. A test counts as
        # built when make, asked for it alone, succeeds, so no stale binary of
        # an earlier build is run. (make -q cannot tell: automake's config.h
        # rule always looks out of date to it.) A failed make all was counted
        # already, and its errors shown.
        $built && stage_failed "make check in $label: building the tests failed"
        say "Building what can be built of the tests in $label (output in $(rel "$dir")/run-tests-partial.log)"
        make -k -C "$dir" -j"$jobs" "${tests[@]}" >"$dir/run-tests-partial.log" 2>&1
        # Integration tests run busd/busd, which no make rule ties them to.
        make -C "$dir" busd/busd >>"$dir/run-tests-partial.log" 2>&1 && have_busd=true || have_busd=false
        for t in "${tests[@]}"; do
                if [[ $t == tests/integration/* ]] && ! $have_busd; then
                        unbuilt+=("$t")
                elif make -C "$dir" "$t" >>"$dir/run-tests-partial.log" 2>&1; then
                        runnable+=("$t")
                else
                        unbuilt+=("$t")
                fi
        done
        summary+=("      not built: ${unbuilt[*]:-(none)}")
        ((${#runnable[@]} > 0)) || return
        say "make check in $label, only the ${#runnable[@]} tests that built"
        timeout -k 30 "$check_timeout" "$@" make -C "$dir" -j"$check_jobs" check-TESTS \
                TESTS="${runnable[*]}" check_PROGRAMS="${runnable[*]}" check_LTLIBRARIES=
        rc=$?
        if [[ -f $dir/test-suite.log ]]; then
                collect_results "$dir" "$label (partial)" "${runnable[@]}"
        else
                stage_failed "make check in $label (partial): exited with status $rc"
                note_unfinished "$dir" "${runnable[@]}"
        fi
}

# build_and_check DIR LABEL CONFIGURE_ARGS -- WRAPPER...
build_and_check() {
        local dir=$1 label=$2 cfg=() start=$SECONDS
        shift 2
        while (($# > 0)) && [[ $1 != -- ]]; do
                cfg+=("$1")
                shift
        done
        shift
        say "configure${cfg[*]:+ ${cfg[*]}} in $label"
        if ! configure_dir "$dir" "${cfg[@]}"; then
                stage_failed "configure in $label"
                return
        fi
        say "make in $label"
        if make -C "$dir" -j"$jobs"; then
                stage_ok "build in $label"
                run_check "$dir" "$label" true "$@"
        else
                stage_failed "build in $label"
                run_check "$dir" "$label" false "$@"
        fi
        summary+=("      ($label: $((SECONDS - start)) s)")
}

say "Checking build dependencies (tools/deps.sh)"
if bash "$srcdir/tools/deps.sh"; then
        stage_ok "dependencies"
else
        stage_failed "dependencies (tools/deps.sh)"
fi

if [[ ! -x $srcdir/configure || ! -f $srcdir/build-aux/tap-driver.sh ]]; then
        say "Generating the build system (autogen.sh)"
        (cd "$srcdir" && NOCONFIGURE=1 ./autogen.sh) || stage_failed "autogen.sh"
fi
if [[ -f $srcdir/config.status ]]; then
        echo "run-tests.sh: $srcdir is configured in place; run 'make distclean' there first" >&2
        stage_failed "source tree is configured in place"
fi

build_and_check "$srcdir/build" build/ --

# gcc 12's ASan (Debian 12) crashes at start when the kernel randomizes mmap
# with more than 28 bits (vm.mmap_rnd_bits = 32 on some newer kernels); the
# sanitized tests then run without address randomization.
wrap=()
if (($(cat /proc/sys/vm/mmap_rnd_bits 2>/dev/null || echo 0) > 28)) &&
        setarch "$(uname -m)" -R true 2>/dev/null; then
        wrap=(setarch "$(uname -m)" -R)
fi
build_and_check "$srcdir/build-sanitizers" build-sanitizers/ --enable-sanitizers -- "${wrap[@]}"

if $distcheck; then
        say "make distcheck in build/"
        start=$SECONDS
        if timeout -k 30 "$distcheck_timeout" make -C "$srcdir/build" -j"$jobs" distcheck; then
                stage_ok "make distcheck in build/ ($((SECONDS - start)) s)"
        else
                stage_failed "make distcheck in build/"
        fi
else
        summary+=("skip  make distcheck (pass --distcheck, or set CI)")
fi

if ((passed + failed == 0)); then
        stage_failed "no test ran"
fi

say "Summary"
printf '  %s\n' "${summary[@]}"
if ((${#failed_logs[@]} > 0)); then
        say "Failed tests (last $tail_lines lines of each log)"
        for log in "${failed_logs[@]}"; do
                printf '\n--- %s\n' "$(rel "$log")"
                tail -n "$tail_lines" "$log" 2>/dev/null | sed 's/^/    /'
        done
        echo
        echo "Failed test logs:"
        printf '  %s\n' "${failed_logs[@]/#"$srcdir"\//}"
fi
echo
((skipped == 0)) || echo "($skipped skipped)"
echo "$passed passed, $failed failed"
((failed == 0))
