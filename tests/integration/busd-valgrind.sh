#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Runs integration test programs against a busd that runs under valgrind's
# memcheck. Each test program ends by stopping busd and checking it exited 0;
# valgrind makes busd exit 99 on any memory error or leak, so a leak in the
# broker fails the program that caused it. Speaks TAP: one line per program.
set -u

tests="test-bad-input test-request test-pubsub test-names test-fds test-shm test-monitor"

if [ -n "${BUSD_SANITIZERS:-}" ]; then
        echo "1..0 # SKIP sanitizer build: AddressSanitizer and valgrind do not mix"
        exit 0
fi
if ! command -v valgrind >/dev/null 2>&1; then
        echo "1..0 # SKIP valgrind is not installed"
        exit 0
fi
: "${BUSD_BINARY:?set by the Makefile}" "${BUSD_BUILDDIR:?set by the Makefile}"

dir=$(mktemp -d "${TMPDIR:-/tmp}/busd-valgrind.XXXXXX") || exit 1
trap 'rm -rf "$dir"' EXIT
cat >"$dir/busd" <<WRAPPER
#!/bin/sh
exec valgrind -q --leak-check=full --show-leak-kinds=definite,indirect,possible \\
        --errors-for-leak-kinds=definite,indirect,possible --error-exitcode=99 \\
        "$BUSD_BINARY" "\$@"
WRAPPER
chmod +x "$dir/busd"

n=0
failed=0
echo "1..$(echo $tests | wc -w)"
for t in $tests; do
        n=$((n + 1))
        log="$dir/$t.log"
        if BUSD_BINARY="$dir/busd" "$BUSD_BUILDDIR/tests/integration/$t" >"$log" 2>&1; then
                echo "ok $n - $t with busd under valgrind"
        else
                failed=1
                echo "not ok $n - $t with busd under valgrind"
                grep -v '^ok ' "$log" | sed 's/^/# /'
        fi
done
exit $failed
