#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Derives tests/data/ccid-descriptors.txt from the decoded reader descriptors gathered by
the libccid project (shared/data/ccid-readers, libccid commit 5de6a96): for each CCID
interface, the 54-byte class descriptor rebuilt from its decoded fields, and the strategy
expected from the decoded feature *descriptions* (not from the hex), so the C parser is
checked against an independent reading. Usage: gen-ccid-vectors.py DIR > OUT."""
import os
import re
import sys

def le(v, n):
    return bytes((v >> (8 * i)) & 0xFF for i in range(n))

def field(sec, name):
    m = re.search(r"^\s*%s:\s*(.+)$" % name, sec, re.M)
    return m.group(1).strip() if m else None

def num(s):
    s = s.split()[0]
    return int(s, 16) if s.startswith("0x") else int(s)

def mhz(s):
    return int(round(float(s.split()[0]) * 1000))

out = ["# CCID class descriptors rebuilt from libccid's decoded reader dumps (readers/ at",
       "# commit 5de6a96, via shared/data/ccid-readers) by gen-ccid-vectors.py.",
       "# name hex level slots host_pps set_params ifsd_req pin_verify pin_modify t0 t1 iccd"]
d = sys.argv[1]
for fn in sorted(os.listdir(d)):
    if not fn.endswith(".txt") or fn == "supported_readers.txt":
        continue
    text = open(os.path.join(d, fn), encoding="utf-8", errors="replace").read()
    for k, sec in enumerate(text.split("CCID Class Descriptor")[1:]):
        try:
            bcd = field(sec, "bcdCCID").split(".")
            bcdv = int(bcd[0]) << 8 | int(bcd[1], 16)
            prot = field(sec, "dwProtocols").split()
            protv = int(prot[0], 16) << 16 | int(prot[1], 16)
            feat = num(field(sec, "dwFeatures"))
            b = bytes([0x36, 0x21]) + le(bcdv, 2) + bytes([num(field(sec, "bMaxSlotIndex")), num(field(sec, "bVoltageSupport"))])
            b += le(protv, 4) + le(mhz(field(sec, "dwDefaultClock")), 4) + le(mhz(field(sec, "dwMaximumClock")), 4)
            b += bytes([num(field(sec, "bNumClockSupported"))]) + le(num(field(sec, "dwDataRate")), 4)
            b += le(num(field(sec, "dwMaxDataRate")), 4) + bytes([num(field(sec, "bNumDataRatesSupported"))])
            b += le(num(field(sec, "dwMaxIFSD")), 4) + le(num(field(sec, "dwSynchProtocols")), 4)
            b += le(num(field(sec, "dwMechanical")), 4) + le(feat, 4) + le(num(field(sec, "dwMaxCCIDMessageLength")), 4)
            b += bytes([num(field(sec, "bClassGetResponse")), num(field(sec, "bClassEnvelope"))])
            b += le(num(field(sec, "wLcdLayout")), 2) + bytes([num(field(sec, "bPINSupport")), num(field(sec, "bMaxCCIDBusySlots"))])
        except (AttributeError, ValueError, IndexError) as e:
            print("skip %s: %s" % (fn, e), file=sys.stderr)
            continue
        assert len(b) == 54
        desc = sec
        # Older dumps print the descriptions without the "..xx.." bit prefix.
        level = "c" if "Character level exchange" in desc else "t" if "TPDU level exchange" in desc else \
                "e" if "Short and Extended APDU level exchange" in desc else \
                "s" if "Short APDU level exchange" in desc else "?"
        host = level in "ct"
        auto_pps = "Automatic PPS made by the CCID" in desc or "Automatic parameters negotiation made by the CCID" in desc
        auto_param = "Automatic parameter configuration based on ATR" in desc
        t1 = re.search(r"^\s+T=1\s*$", desc, re.M) is not None
        t0 = re.search(r"^\s+T=0\s*$", desc, re.M) is not None
        ifsd_auto = "Automatic IFSD exchange as first exchange" in desc
        pin = num(field(sec, "bPINSupport"))
        iccd = "..08.. ICCD token" in desc or "..08.. Unknown (ICCD?)" in desc or "ICCD token" in desc
        vals = [level, num(field(sec, "bMaxSlotIndex")) + 1, int(host and not auto_pps),
                int(host and not auto_param), int(host and t1 and not ifsd_auto),
                pin & 1, (pin >> 1) & 1, int(t0), int(t1), int(iccd)]
        out.append("%s#%d %s %s" % (fn[:-4].replace(" ", "_"), k, b.hex().upper(), " ".join(map(str, vals))))
print("\n".join(out))
