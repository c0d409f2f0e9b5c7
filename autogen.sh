#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# Regenerate the build system; then run configure with our arguments unless
# NOCONFIGURE is set (as distributors and out-of-tree builds want).
set -e
srcdir=$(dirname "$0")
cd "$srcdir"
autoreconf -fi
cd - >/dev/null
if [ -z "$NOCONFIGURE" ]; then
        exec "$srcdir/configure" "$@"
fi
