#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Turns the guest's output (bench/qemu/guest-bench.sh through tests/qemu/run) into the
markdown section of bench/qemu/run:

  report.py LOG OUT.MD --rounds R --apdus N --warmup W [--about TEXT]...

LOG holds the BENCH-ROUND lines (one per side and round) and the BENCH-POOLED lines
(one per side). The section goes to OUT.MD and to stdout. Exit status 0 when both sides
have all their rounds, 1 otherwise (the section then says why the target is not met).
Only the standard library is used.
"""
import argparse
import os
import re
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from benchstats import fields, ms, write_section  # noqa: E402

SIDES = [("calais", "Calais (CCID backend, in process)"),
         ("pcscd", "pcscd + libccid (libpcsclite client)")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("log")
    ap.add_argument("out")
    ap.add_argument("--rounds", type=int, required=True)
    ap.add_argument("--apdus", type=int, required=True)
    ap.add_argument("--warmup", type=int, required=True)
    ap.add_argument("--about", action="append", default=[],
                    help="a line of the setup description (markdown)")
    a = ap.parse_args()

    rounds = {s: [] for s, _ in SIDES}
    pooled = {}
    kernel = pcscd = None
    with open(a.log, errors="replace") as f:
        for line in f:
            r = fields(line, "BENCH-ROUND")
            if r and r.get("label") in rounds:
                rounds[r["label"]].append(r)
            p = fields(line, "BENCH-POOLED")
            if p and p.get("label") in rounds:
                pooled[p["label"]] = p
            m = re.search(r"# guest: init at .*kernel (\S+)", line)
            if m:
                kernel = m.group(1)
            m = re.search(r"BENCH-INFO pcsc-lite version ([0-9.]+[0-9])", line)
            if m:
                pcscd = m.group(1)

    complete = all(len(rounds[s]) == a.rounds and s in pooled for s, _ in SIDES)
    rate = {s: statistics.median(float(r["rate"]) for r in rounds[s])
            for s, _ in SIDES if rounds[s]}

    out = ["## USB CCID in a QEMU guest", ""]
    out.append("APDU round trips on QEMU's emulated `usb-ccid` reader (the scripted card of "
               "`tests/qemu/vscard.py` behind `ccid-card-passthru`), in a small Linux guest "
               "(kernel %s, 1 vCPU, TCG) booted by `tests/qemu/run`. The APDU is "
               "`00 A4 04 00 06 F0 01 02 03 04 05` (SELECT, 11 bytes) and its answer the "
               "card's FCI + `90 00` (12 bytes), checked every time. One source, "
               "`bench/qemu/ccid_bench.c`, built twice: statically linked with Calais (CCID "
               "backend on libusb, `CALAIS_BACKENDS=ccid`), and linked with libpcsclite "
               "talking to pcscd%s with libccid in the same guest."
               % (kernel or "?", " " + pcscd if pcscd else ""))
    out.append("")
    out.append("%d rounds; each runs both sides one after the other (odd rounds Calais first, "
               "even rounds pcscd first), %d untimed then %d timed APDUs each. pcscd is "
               "started for its side and has exited before the other side runs, so one "
               "stack at a time holds the reader. Round trip: over all rounds' APDUs of a "
               "side; APDUs/s: the median over the rounds of N / wall time of the N round "
               "trips; ready: from the program's start to the connected card (pcscd's own "
               "start included)." % (a.rounds, a.warmup, a.apdus))
    for line in a.about:
        out.append("")
        out.append(line)
    out.append("")
    out.append("| stack | rounds × APDUs | round trip median | p99 | mean | APDUs/s | "
               "APDUs/s per round | ready (median) |")
    out.append("| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |")
    for s, name in SIDES:
        rs, p = rounds[s], pooled.get(s)
        if not rs or not p:
            out.append("| %s | %d × %d | – | – | – | – | (no result) | – |"
                       % (name, len(rs), a.apdus))
            continue
        out.append("| %s | %d × %s | %s | %s | %s | %.0f | %s | %.0f ms |" % (
            name, len(rs), rs[0]["n"], ms(p["median_us"]), ms(p["p99_us"]),
            ms(p["mean_us"]), rate[s], ", ".join("%.0f" % float(r["rate"]) for r in rs),
            statistics.median(float(r["ready_ms"]) for r in rs)))
    out.append("")

    target = ("APDU rate (USB CCID, QEMU guest) at least that of pcscd + libccid, same "
              "guest, same reader and card, alternating")
    if complete:
        ratio = rate["calais"] / rate["pcscd"]
        lat = float(pooled["calais"]["median_us"]) / float(pooled["pcscd"]["median_us"])
        out.append("Ratio Calais / pcscd + libccid: **%.2f×** the APDU rate (median of the "
                   "rounds), %.2f× the median round trip." % (ratio, lat))
        wins = sum(1 for c, q in zip(rounds["calais"], rounds["pcscd"])
                   if float(c["rate"]) >= float(q["rate"]))
        measured = "%.0f vs %.0f APDUs/s (%.2f×); Calais faster in %d of %d rounds" % (
            rate["calais"], rate["pcscd"], ratio, wins, a.rounds)
        if ratio >= 1.0:
            result = "met"
        else:
            result = "NOT met: Calais' rate is %.0f%% of pcscd + libccid's" % (100 * ratio)
    else:
        missing = ", ".join("%s %d of %d rounds%s" % (s, len(rounds[s]), a.rounds,
                                                      "" if s in pooled else ", no pooled line")
                            for s, _ in SIDES)
        out.append("The benchmark did not complete (%s); see the log of bench/qemu/run." % missing)
        measured = "no complete measurement (%s)" % missing
        result = "NOT met: no complete measurement"
    out.append("")
    out.append("### Targets")
    out.append("")
    out.append("| target | measured | result |")
    out.append("| --- | --- | --- |")
    out.append("| %s | %s | %s |" % (target, measured, result))
    out.append("")

    write_section(a.out, out)
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
