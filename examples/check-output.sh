#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Runs a program, shows its output, and fails unless it exits 0 and every extended regex
# given matches a line of its output (stdout and stderr together):
#   check-output.sh REGEX... -- PROGRAM [ARGS...]
# A program expected to fail is wrapped: check-output.sh RE -- sh -c '! "$0" ARGS' PROGRAM
regexes=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  regexes+=("$1")
  shift
done
if [ $# -lt 2 ]; then
  echo "usage: check-output.sh REGEX... -- PROGRAM [ARGS...]" >&2
  exit 2
fi
shift

out=$("$@" 2>&1)
rc=$?
printf '%s\n' "$out"
fail=0
if [ $rc -ne 0 ]; then
  echo "check-output: $1 exited with status $rc"
  fail=1
fi
for re in "${regexes[@]}"; do
  if ! printf '%s\n' "$out" | grep -Eq -- "$re"; then
    echo "check-output: no line matches /$re/"
    fail=1
  fi
done
exit $fail
