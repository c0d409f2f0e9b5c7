#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Installs the Debian packages that building busd and running its tests need,
# if any is missing. Asks dpkg first, and touches apt (update, then install)
# only when something is missing, so a second run does nothing.
#
#   tools/deps.sh            install what is missing (as root, or through sudo)
#   tools/deps.sh --check    only report; exit 1 if something is missing
#   tools/deps.sh --list     print the package list
#
# Why each package:
#   build-essential autoconf automake libtool pkg-config   the autotools build
#   libprotobuf-c-dev protobuf-c-compiler protobuf-compiler the wire schema (protoc + protoc-gen-c)
#   libsystemd-dev                                          sd-event, sd-daemon in busd
#   libprotobuf-dev                                         google/protobuf/descriptor.proto (busdctl's reflection)
#   libjson-c-dev                                           JSON in and out of busdctl
#   bash-completion                                         where busdctl's completion is installed
#   systemd                                                 systemd-socket-activate for the tests
#   valgrind                                                memory checking of tests
set -euo pipefail

PACKAGES=(
        build-essential autoconf automake libtool pkg-config
        libprotobuf-c-dev protobuf-c-compiler protobuf-compiler
        libprotobuf-dev libjson-c-dev bash-completion
        libsystemd-dev systemd valgrind
)

mode=install
case "${1-}" in
"") ;;
--check) mode=check ;;
--list) printf '%s\n' "${PACKAGES[@]}"; exit 0 ;;
-h | --help) awk 'NR > 3 && !/^#/ { exit } NR > 3 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
*) echo "deps.sh: unknown argument: $1 (try --help)" >&2; exit 2 ;;
esac

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
        echo "deps.sh: this is not a Debian-based system; install the equivalents of:" >&2
        echo "    ${PACKAGES[*]}" >&2
        echo "deps.sh: continuing; configure will name anything still missing." >&2
        exit 0
fi

missing=()
for p in "${PACKAGES[@]}"; do
        status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
        [[ $status == installed ]] || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
        echo "deps.sh: all ${#PACKAGES[@]} build and test packages are installed."
        exit 0
fi
echo "deps.sh: missing Debian packages: ${missing[*]}"
if [[ $mode == check ]]; then
        exit 1
fi

# Who runs apt: root directly, others through sudo if it is there.
sudo_cmd=()
if ((EUID != 0)); then
        if ! command -v sudo >/dev/null 2>&1; then
                echo "deps.sh: not root and no sudo: as root, run" >&2
                echo "    apt-get update && apt-get install ${missing[*]}" >&2
                exit 1
        fi
        sudo_cmd=(sudo)
        # Without a terminal nobody can type a password: fail instead of hanging.
        [[ -t 0 ]] || sudo_cmd+=(-n)
fi

export DEBIAN_FRONTEND=noninteractive
apt_opts=(-y -q -o Dpkg::Use-Pty=0 -o Acquire::Retries=3)
echo "deps.sh: ${sudo_cmd[*]:+${sudo_cmd[*]} }apt-get update"
"${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" update
echo "deps.sh: ${sudo_cmd[*]:+${sudo_cmd[*]} }apt-get install --no-install-recommends ${missing[*]}"
"${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get "${apt_opts[@]}" install --no-install-recommends "${missing[@]}"

# Trust dpkg, not apt's exit status alone.
still=()
for p in "${missing[@]}"; do
        status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
        [[ $status == installed ]] || still+=("$p")
done
if ((${#still[@]} > 0)); then
        echo "deps.sh: still missing after apt-get install: ${still[*]}" >&2
        exit 1
fi
echo "deps.sh: installed ${missing[*]}."
