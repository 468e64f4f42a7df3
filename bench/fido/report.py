#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Turns the guest's output (bench/fido/guest-bench.sh through tests/qemu/run) into the
markdown section of bench/fido/run:

  report.py LOG OUT.MD --rounds R --n N --warmup W [--about TEXT]...

LOG holds BENCH-ROUND lines (one per side, exchange and round) and BENCH-POOLED lines
(one per side and exchange). The section goes to OUT.MD and to stdout. Exit status 0
when every side has all its rounds, 1 otherwise (the section then says why).
Only the standard library is used.
"""
import argparse
import os
import re
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from benchstats import fields, ms, write_section  # noqa: E402

SIDES = ["calais", "floor"]
OPS = [("version", "U2F VERSION (APDU `00 03 00 00 00` → `U2F_V2 90 00`)"),
       ("getinfo", "CTAP2 getInfo (APDU `80 10 00 00 01 04 00` → 31 bytes + `90 00`)")]
TARGET = 1.10


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("log")
    ap.add_argument("out")
    ap.add_argument("--rounds", type=int, required=True)
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--warmup", type=int, required=True)
    ap.add_argument("--about", action="append", default=[])
    a = ap.parse_args()

    rounds = {(s, o): [] for s in SIDES for o, _ in OPS}
    pooled = {}
    kernel = None
    with open(a.log, errors="replace") as f:
        for line in f:
            for tag, store in (("BENCH-ROUND", None), ("BENCH-POOLED", pooled)):
                r = fields(line, tag)
                if not r or (r.get("label"), r.get("op")) not in rounds:
                    continue
                key = (r["label"], r["op"])
                if store is None:
                    rounds[key].append(r)
                else:
                    store[key] = r
            m = re.search(r"# guest: init at .*kernel (\S+)", line)
            if m:
                kernel = m.group(1)

    complete = all(len(rounds[k]) == a.rounds and k in pooled for k in rounds)
    out = ["## FIDO over the kernel's HID stack in a QEMU guest", ""]
    out.append("Round trips to the virtual FIDO authenticator `tests/hid/vauth-uhid` (a USB "
               "FIDO device on `/dev/uhid`, bound by `hid-generic`, reached through "
               "`/dev/hidraw0`), in the small Linux guest of `tests/qemu/run` (kernel %s, "
               "1 vCPU, TCG). One program, `bench/fido/fido_bench.c`, two sides: **Calais** "
               "(`SCardTransmit` on the `[FIDO]` reader: the hid backend on hidapi's hidraw "
               "backend, statically linked) and **the floor** (hidapi alone: the program's "
               "own CTAPHID framing on `hid_write`/`hid_read_timeout`, the same CTAPHID "
               "messages Calais sends). Every answer is checked. The authenticator answers "
               "a CBOR request 5 ms after it has it (`tests/hid/vauth.c`), so getInfo's round "
               "trip is mostly that wait: what Calais adds is the difference of the "
               "medians." % (kernel or "?"))
    out.append("")
    out.append("%d rounds; each runs both sides once, each in its own process (odd rounds "
               "Calais first), the authenticator process running throughout; per side, "
               "exchange and round %d untimed then %d timed exchanges. Medians and p99 "
               "over all rounds' exchanges; Calais / floor: the ratio of those medians, "
               "and per round the ratio of that round's medians."
               % (a.rounds, a.warmup, a.n))
    for line in a.about:
        out.append("")
        out.append(line)
    out.append("")
    out.append("| exchange | Calais median | p99 | floor median | p99 | Calais − floor | "
               "Calais / floor | per round |")
    out.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    targets = []
    for op, name in OPS:
        c, f = pooled.get(("calais", op)), pooled.get(("floor", op))
        if not c or not f:
            out.append("| %s | – | – | – | – | – | – | (no result) |" % name)
            targets.append((op, None, None))
            continue
        ratio = float(c["median_us"]) / float(f["median_us"])
        per = [float(x["median_us"]) / float(y["median_us"])
               for x, y in zip(rounds[("calais", op)], rounds[("floor", op)])]
        out.append("| %s | %s | %s | %s | %s | %.0f µs | %.3f× | %s |" % (
            name, ms(c["median_us"]), ms(c["p99_us"]), ms(f["median_us"]), ms(f["p99_us"]),
            float(c["median_us"]) - float(f["median_us"]), ratio,
            ", ".join("%.2f" % p for p in per)))
        targets.append((op, ratio, (c, f, per)))
    out.append("")
    if not complete:
        missing = ", ".join("%s %s %d of %d rounds" % (s, o, len(rounds[(s, o)]), a.rounds)
                            for s, o in rounds if len(rounds[(s, o)]) != a.rounds)
        out.append("The benchmark did not complete (%s); see the log of bench/fido/run."
                   % (missing or "no pooled lines"))
        out.append("")
    out.append("### Targets")
    out.append("")
    out.append("| target | measured | result |")
    out.append("| --- | --- | --- |")
    for op, ratio, data in targets:
        target = ("%s round trip through Calais (PC/SC, hid backend) within 10 %% of hidapi "
                  "alone, QEMU guest, uhid authenticator" % dict(OPS)[op].split(" (")[0])
        if ratio is None or not complete:
            out.append("| %s | no complete measurement | NOT met: no complete measurement |"
                       % target)
            continue
        c, f, per = data
        measured = "%s vs %s median (%.3f×; per-round ratios %.2f–%.2f)" % (
            ms(c["median_us"]), ms(f["median_us"]), ratio, min(per), max(per))
        result = "met" if ratio <= TARGET else \
            "NOT met: Calais takes %.0f%% more than the floor" % (100 * (ratio - 1))
        out.append("| %s | %s | %s |" % (target, measured, result))
    out.append("")

    write_section(a.out, out)
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
