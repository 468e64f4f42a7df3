#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# Runs a program and fails unless it exits 0 and its output matches every regex given:
#   check-output.sh REGEX... -- PROGRAM ARGS...
regexes=""
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  regexes="$regexes
$1"
  shift
done
[ "$1" = "--" ] && shift
out=$("$@" 2>&1); rc=$?
printf '%s\n' "$out"
[ $rc -eq 0 ] || { echo "check-output: exit status $rc"; exit 1; }
printf '%s\n' "$regexes" | while IFS= read -r re; do
  [ -z "$re" ] && continue
  printf '%s\n' "$out" | grep -Eq -- "$re" || { echo "check-output: no line matches /$re/"; exit 1; }
done
