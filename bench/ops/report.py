#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Writes the markdown section of bench/ops from the samples of all rounds.

    report.py SAMPLES.tsv KEY=VALUE...

SAMPLES.tsv: "<label>\t<op>\t<microseconds>" lines from bench_ops, label a (pcsc-lite:
pcscd + vpcd driver), b (Calais, vpcd backend) or c (Calais, simulated backend), d
(vpcd_floor), afree and bfree (a and b unpinned), with
"#<round>" appended by bench/ops/run. Samples of all rounds are pooled per operation;
the ratio column also shows the range of the per-round ratios, since the machine is shared.
KEY=VALUE: rounds, n, m, events, away_a, away_b, steal, busy, quick, pcsclite, wall.
"""
import os
import statistics
import sys
from collections import defaultdict

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from benchstats import pct, fratio  # noqa: E402

OPS = [
    ("first_establish", "first SCardEstablishContext of a process (one per round)"),
    ("establish_release", "EstablishContext + ReleaseContext"),
    ("list_readers", "ListReaders (2 readers, caller's buffer)"),
    ("connect_disconnect", "Connect (shared, T=0 or T=1) + Disconnect (leave)"),
    ("transmit_2", "Transmit, 2-byte reply (SELECT → 90 00)"),
    ("transmit_257", "Transmit, 257-byte reply (80 EF 00 FF → 255 B + 90 00)"),
    ("status", "Status"),
    ("getattrib", "GetAttrib(ATR_STRING)"),
    ("gsc0", "GetStatusChange, timeout 0, no change"),
    ("transaction", "BeginTransaction + EndTransaction"),
    ("session", "whole session: establish, list, connect, transmit, disconnect, release"),
]


def fmt(us):
    if us != us:
        return "–"
    if us >= 10000:
        return "%.1f ms" % (us / 1000.0)
    if us >= 100:
        return "%.0f" % us
    if us >= 1:
        return "%.1f" % us
    return "%.2f" % us


def main():
    meta = dict(a.split("=", 1) for a in sys.argv[2:])
    pooled = defaultdict(list)               # (cfg, op) -> samples
    rounds = defaultdict(lambda: defaultdict(list))  # (cfg, op) -> round -> samples
    notes = set()
    with open(sys.argv[1]) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 3:
                continue
            label, op, v = parts
            cfg, _, rnd = label.partition("#")
            if op.startswith("note_"):
                notes.add((cfg, op))
                continue
            pooled[(cfg, op)].append(float(v))
            rounds[(cfg, op)][rnd].append(float(v))
    for v in pooled.values():
        v.sort()

    def med(cfg, op):
        return pct(pooled.get((cfg, op), []), 50)

    def p99(cfg, op):
        return pct(pooled.get((cfg, op), []), 99)

    def ratio(op, num="a", den="b"):
        a, b = med(num, op), med(den, op)
        return a / b if a == a and b == b and b > 0 else float("nan")

    def round_ratios(op):
        ra, rb = rounds.get(("a", op), {}), rounds.get(("b", op), {})
        out = []
        for r in ra:
            if r in rb and ra[r] and rb[r]:
                out.append(statistics.median(ra[r]) / statistics.median(rb[r]))
        return out

    L = []
    L.append("## PC/SC operations: pcsc-lite and Calais side by side (bench/ops)")
    L.append("")
    L.append("One harness, `bench/ops/bench_ops.c`, written against `<winscard.h>` only, built "
             "twice and run in the same session:")
    L.append("")
    L.append("- **(a)** linked with the system's pcsc-lite %s: a private `pcscd -f` "
             "(tests/peers/pcscd-peer) with vsmartcard's vpcd driver;" % meta.get("pcsclite", ""))
    L.append("- **(b)** linked with Calais' static library, vpcd backend "
             "(`CALAIS_BACKENDS=vpcd`): the same virtual card program, `tests/peers/vcard` "
             "(C, TCP_QUICKACK), connected to each;")
    L.append("- **(c)** the Calais build with the simulated backend (`CALAIS_BACKENDS=sim`, a "
             "simulated reader whose card computes the same answers in place): the manager's "
             "own cost.")
    L.append("")
    L.append("%s rounds; each round runs (a), (b), (c) one after the other as separate "
             "processes, so (a) and (b) alternate round by round. Per round and operation, "
             "%s timed iterations (%s for GetStatusChange(0) and the whole session) after "
             "50 untimed ones; the samples of all rounds are pooled into the median and p99 "
             "(nearest rank). Microseconds unless marked ms. The a/b column is the ratio of "
             "the pooled medians, with the range of per-round ratios in brackets. "
             "A \"257-byte reply\" is 255 data bytes plus SW1 SW2. %s"
             % (meta.get("rounds", "?"), meta.get("n", "?"), meta.get("m", "?"),
                ("Every process involved (the harness, pcscd, the cards) is pinned to CPU %s "
                 "(`taskset`), so each IPC hop is a context switch on one vCPU; unpinned "
                 "rounds are shown further down." % meta["cpu"]) if meta.get("cpu") else
                "Nothing is pinned to a CPU."))
    L.append("")
    L.append("| operation | (a) pcscd median | (a) p99 | (b) Calais vpcd median | (b) p99 "
             "| a/b | (c) Calais sim median | (c) p99 |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for op, what in OPS:
        rr = round_ratios(op)
        span = " (%s–%s)" % (fratio(min(rr)), fratio(max(rr))) if len(rr) > 1 else ""
        L.append("| %s | %s | %s | %s | %s | %s%s | %s | %s |" % (
            what, fmt(med("a", op)), fmt(p99("a", op)), fmt(med("b", op)), fmt(p99("b", op)),
            fratio(ratio(op)), span, fmt(med("c", op)), fmt(p99("c", op))))
    L.append("")
    L.append("The first row is the start-up of a process, not a per-call cost: pcsc-lite "
             "connects to the running pcscd; Calais starts its manager, and with the vpcd "
             "backend also waits (up to 150 ms) for the virtual cards to connect, which "
             "`vcard` retries only every 100 ms after the previous round's process went away.")
    L.append("")
    if ("a", "note_getattrib_unsupported") in notes:
        L.append("GetAttrib on (a): pcscd forwards the attribute to vpcd's driver, which knows "
                 "none and answers `SCARD_E_UNSUPPORTED_FEATURE` after the same round trip; "
                 "Calais answers the ATR itself.")
        L.append("")

    # What the manager adds to Transmit, with a card that answers in no time.
    add = {}
    L.append("**Transmit through Calais with the simulated card**: the card's answer function "
             "called directly, in the same process, is the floor; what is left is the "
             "manager's (handle lookup, locks, the T=1 path, copies).")
    L.append("")
    L.append("| reply | Transmit (c) median | p99 | card function alone | manager adds |")
    L.append("|---|---:|---:|---:|---:|")
    for op, fn, what in (("transmit_2", "cardfn_2", "2 bytes"),
                         ("transmit_257", "cardfn_257", "257 bytes")):
        add[op] = med("c", op) - med("c", fn)
        L.append("| %s | %s | %s | %s | %s µs |" % (what, fmt(med("c", op)), fmt(p99("c", op)),
                                                  fmt(med("c", fn)), fmt(add[op])))
    L.append("")

    # Transmit over vpcd against its floor: the same card and exchanges over a bare socket.
    if any(k[0] == "d" for k in pooled):
        L.append("**Transmit over vpcd, against its floor**: `vpcd_floor` sends the same "
                 "APDUs to the same kind of card over a bare socket (vpcd's framing, "
                 "TCP_QUICKACK re-armed, no PC/SC at all), in the same rounds and on the same "
                 "CPU: no vpcd client can go below it. What is above it is the resource "
                 "manager's share.")
        L.append("")
        L.append("| reply | (a) pcscd median | (b) Calais vpcd median | floor median | floor p99 "
                 "| pcscd above the floor | Calais above the floor |")
        L.append("|---|---:|---:|---:|---:|---:|---:|")
        for op, fl, what in (("transmit_2", "floor_2", "2 bytes"),
                             ("transmit_257", "floor_257", "257 bytes")):
            f = med("d", fl)
            L.append("| %s | %s | %s | %s | %s | %s | %s |" % (
                what, fmt(med("a", op)), fmt(med("b", op)), fmt(f), fmt(p99("d", fl)),
                fmt(med("a", op) - f), fmt(med("b", op) - f)))
        L.append("")

    # Unpinned rounds, for the effect of process placement on this machine.
    if any(k[0] == "afree" for k in pooled):
        L.append("**Unpinned** (rounds of (a) and (b): %s, operations only, nothing pinned; "
                 "medians): where the scheduler puts the client and its peer (pcscd, the "
                 "card) changes the IPC costs several times over, from round to round — a "
                 "wake-up on the other, idle vCPU of a virtual machine is slow — hence the "
                 "pinned rounds above." % meta.get("free", "?"))
        L.append("")
        L.append("| operation | (a) pcscd median | per-round medians | (b) Calais vpcd median "
                 "| per-round medians | a/b |")
        L.append("|---|---:|---|---:|---|---:|")
        for op, what in OPS[1:]:
            def rmeds(cfg):
                rs = rounds.get((cfg, op), {})
                return ", ".join(fmt(statistics.median(rs[r])) for r in sorted(rs, key=int))
            r = ratio(op, "afree", "bfree")
            L.append("| %s | %s | %s | %s | %s | %s |" % (
                what, fmt(med("afree", op)), rmeds("afree"), fmt(med("bfree", op)),
                rmeds("bfree"), fratio(r)))
        L.append("")

    # Events.
    ev = [("event_insert", "card inserted → waiting GetStatusChange returns"),
          ("event_remove", "card removed → waiting GetStatusChange returns")]
    L.append("**Event latency** (reader `Virtual PCD 00 01`; %s events per configuration). "
             "Removal: the harness sends the card SIGUSR1 (it closes its socket) while a thread "
             "waits in `SCardGetStatusChange`, after a random 20–420 ms pause so the event "
             "falls anywhere in pcscd's 400 ms polling cycle; timed from the signal. "
             "Insertion: the card reconnects by itself `--away-ms` after the signal (%s ms on "
             "(a), %s ms on (b)); timed from that moment, so the card's own timer slack "
             "counts against the manager. (c) inserts and removes the simulated card from a "
             "second thread (pure dispatch cost)."
             % (meta.get("events", "?"), meta.get("away_a", "?"), meta.get("away_b", "?")))
    L.append("")
    L.append("| event | (a) pcscd median | (a) p99 | (b) Calais vpcd median | (b) p99 | a/b "
             "| (c) sim median | (c) p99 | N (a/b/c) |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for op, what in ev:
        L.append("| %s | %s | %s | %s | %s | %s | %s | %s | %d/%d/%d |" % (
            what, fmt(med("a", op)), fmt(p99("a", op)), fmt(med("b", op)), fmt(p99("b", op)),
            fratio(ratio(op)), fmt(med("c", op)), fmt(p99("c", op)),
            len(pooled.get(("a", op), [])), len(pooled.get(("b", op), [])),
            len(pooled.get(("c", op), []))))
    missed = {c: int(sum(pooled.get((c, "event_missed"), []))) for c in "abc"}
    if any(missed.values()):
        L.append("")
        L.append("Events not seen within 10 s: (a) %d, (b) %d, (c) %d." %
                 (missed["a"], missed["b"], missed["c"]))
    L.append("")

    # Targets.
    T = []

    def target(name, measured, ok, why):
        T.append((name, measured, "met" if ok else "NOT met: " + why))

    def faster(op, name, k):
        r = ratio(op)
        target("%s at least %d× faster than pcscd" % (name, k),
               "a/b = %s (%s vs %s µs)" % (fratio(r), fmt(med("a", op)), fmt(med("b", op))),
               r == r and r >= k, "only %s" % fratio(r))

    faster("status", "Status", 20)
    faster("getattrib", "GetAttrib", 20)
    faster("transaction", "Begin+EndTransaction", 20)
    faster("establish_release", "Establish+Release", 20)
    faster("gsc0", "GetStatusChange timeout 0", 100)
    for op, what in (("transmit_2", "2-byte"), ("transmit_257", "257-byte")):
        a, b = med("a", op), med("b", op)
        target("Transmit %s reply, same vcard: Calais at most half of pcscd's time" % what,
               "%s vs %s µs (%.0f %%)" % (fmt(b), fmt(a), 100 * b / a if a == a and a else 0),
               b == b and a == a and b <= a / 2, "Calais takes %.0f %% of pcscd's time"
               % (100 * b / a if a else 0))
    for op, what in (("transmit_2", "2-byte"), ("transmit_257", "257-byte")):
        target("Simulated card, %s reply: the manager adds at most 2 µs" % what,
               "%s µs" % fmt(add[op]), add[op] == add[op] and add[op] <= 2,
               "adds %s µs" % fmt(add[op]))
    for op, what in (("event_insert", "insertion"), ("event_remove", "removal")):
        b = med("b", op)
        r = ratio(op)
        target("Event latency (%s), vpcd backend: median under 5 ms" % what,
               "%s µs" % fmt(b), b == b and b < 5000, "median %s µs" % fmt(b))
        target("Event latency (%s): at least 40× faster than pcscd + vpcd" % what,
               "a/b = %s (%s vs %s µs)" % (fratio(r), fmt(med("a", op)), fmt(b)),
               r == r and r >= 40, "only %s" % fratio(r))

    L.append("### Targets (bench/ops)")
    L.append("")
    L.append("| target | measured (medians) | result |")
    L.append("|---|---|---|")
    for name, measured, res in T:
        L.append("| %s | %s | %s |" % (name, measured, res))
    L.append("")
    noise = []
    if "steal" in meta:
        noise.append("hypervisor steal %s %% of the CPUs" % meta["steal"])
    if "busy" in meta:
        noise.append("the whole machine busy %s %% (this benchmark included)" % meta["busy"])
    if "wall" in meta:
        noise.append("wall time %s s" % meta["wall"])
    if noise:
        L.append("During this part: " + "; ".join(noise) + ".")
        L.append("")
    if meta.get("quick") == "1":
        L.append("*Quick run (`--quick`): few iterations and events; not for comparison.*")
        L.append("")
    print("\n".join(L))


if __name__ == "__main__":
    main()
