#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Counts test cases in a meson testlog.json: a Criterion executable counts its own
cases (its "Synthesis" line), a plain build the cases it ran, anything else counts once.
Prints "passed failed skipped"."""
import json
import re
import sys

passed = failed = skipped = 0
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    line = line.strip()
    if not line:
        continue
    t = json.loads(line)
    result = t.get("result")
    out = (t.get("stdout") or "") + (t.get("stderr") or "")
    syn = re.findall(r"Synthesis: Tested: (\d+) \| Passing: (\d+) \| Failing: (\d+) \| Crashing: (\d+)", out)
    plain = re.findall(r"\[====\] (\d+) tests passed", out)
    plain_skipped = re.findall(r"\[====\] (\d+) tests skipped", out)
    if result == "SKIP":
        skipped += 1
    elif syn and result == "OK":
        passed += int(syn[-1][1])
    elif syn:
        tested, ok, bad, crashed = map(int, syn[-1])
        passed += ok
        failed += max(bad + crashed, 1)
    elif plain and result == "OK":
        passed += int(plain[-1])
        skipped += int(plain_skipped[-1]) if plain_skipped else 0
    elif result in ("OK", "EXPECTEDFAIL"):
        passed += 1
    else:
        failed += 1
print(passed, failed, skipped)
