#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
# Writes the seed corpora of the fuzz targets added for the device and configuration
# parsers (tests/fuzz/corpus/<target>/): small, real-looking inputs in each target's
# input format (see the target's head comment). Run from anywhere; the files it writes
# are committed, so the corpora do not depend on running it.
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
T0_ATR = bytes.fromhex("3B021450")
JCOP_ATR = bytes.fromhex("3BFA1300008131FE454A434F5034315632323196")
T1_CRC_ATR = bytes.fromhex("3B80800101")  # TD1 T=0 -> TD2 T=1, TC3 absent
SIM_ATR = bytes.fromhex("3B9F95801FC78031E073FE211B63F100008301900047")


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def ccid(msg_type, data=b"", status=0, error=0, param=0):
    """An RDR_to_PC message; bSlot and bSeq are patched by the targets."""
    return bytes([msg_type]) + struct.pack("<I", len(data)) + bytes([0, 0, status, error, param]) + data


# ---- NotifySlotChange and the interrupt pipe: [slots - 1][message]
write("ccid_intr", "one-slot-inserted", bytes([0, 0x50, 0x03]))
write("ccid_intr", "one-slot-removed", bytes([0, 0x50, 0x02]))
write("ccid_intr", "two-slots", bytes([1, 0x50, 0x0B]))
write("ccid_intr", "eight-slots", bytes([7, 0x50, 0xFF, 0x33]))
write("ccid_intr", "hardware-error", bytes([0, 0x51, 0x00, 0x07, 0xFB]))
write("ccid_intr", "unknown", bytes([0, 0x99, 0x00]))

# ---- GET_DATA_RATES: [len][answer][ATR]
def rates(rs, atr):
    a = b"".join(struct.pack("<I", r) for r in rs)
    return bytes([len(a)]) + a + atr
write("ccid_rates", "gemalto", rates([9600, 19200, 38400, 76800, 115200, 153600, 230400], SIM_ATR))
write("ccid_rates", "omnikey", rates([10753, 21505, 43011, 57348, 86022, 114695, 172043, 344086], JCOP_ATR))
write("ccid_rates", "zero-ended", rates([9600, 0, 19200], T0_ATR))
write("ccid_rates", "odd-length", bytes([6]) + struct.pack("<I", 9600) + b"\x00\x4b" + SIM_ATR)

# ---- smartcard_list.txt: [ATR len - 1][ATR][cap - 1][text]
LIST = (b"# smartcard_list.txt\n#\n"
        b"3B 02 14 50\n\tSchlumberger Multiflex 3k\n\n"
        b"3B FA 13 00 00 81 31 FE 45 4A 43 4F 50 34 31 56 32 32 31 96\n\tJCOP41 V2.2.1\n\tNXP\n\n"
        b"3B 9F 95 80 1F C7 80 31 E0 73 FE 21 1B 63 .. .. .. 83 .. 90 00 ..\n\tSIM card\n")
write("atr_list", "multiflex", bytes([len(T0_ATR) - 1]) + T0_ATR + bytes([255]) + LIST)
write("atr_list", "jcop-small-buffer", bytes([len(JCOP_ATR) - 1]) + JCOP_ATR + bytes([7]) + LIST)
write("atr_list", "sim-pattern", bytes([len(SIM_ATR) - 1]) + SIM_ATR + bytes([128]) + LIST.replace(b"\n", b"\r\n"))
write("atr_list", "long-line", bytes([len(T0_ATR) - 1]) + T0_ATR + bytes([64]) + b"3B" + b" " * 1100 + b"02 14 50\n\tcut\n" + LIST)

# ---- the service's reader list (multi-string)
write("pcsc_names", "two-readers", b"Gemalto PC Twin Reader 00 00\0ACS ACR122U PICC Interface 01 00\0\0")
write("pcsc_names", "one-reader", b"Alcor Micro AU9540 00 00\0\0")
write("pcsc_names", "no-final-nul", b"Identiv uTrust 3700 F 00 00\0Identiv uTrust 3700 F 00 01")
write("pcsc_names", "duplicate", b"SCM SCR 3310 00 00\0SCM SCR 3310 00 00\0\0")
write("pcsc_names", "long-name", b"R" * 140 + b"\0Short 00 00\0\0")
write("pcsc_names", "empty", b"\0\0")

# ---- CALAIS_* values: [variable][value]
env = {
    "serial-gemtwin": (0, b"/dev/ttyUSB0:gemtwin"),
    "serial-two": (0, b"/dev/ttyS0:phoenix:cts+khz=3579, /dev/ttyUSB1:gemtwin:GemPCPinPad"),
    "serial-smartmouse": (0, b"/dev/serial/by-id/usb-FTDI:1:smartmouse:!dsr"),
    "serial-bad": (0, b"/dev/ttyS1:gemtwin:GemPCFoo,:phoenix,COM3:unknown"),
    "vpcd-host-port": (1, b"127.0.0.1:35963\x004"),
    "vpcd-v6": (1, b"[::1]:35963\x002"),
    "vpcd-port-only": (1, b":40000\x0016"),
    "vpcd-bad": (1, b"host:1:2\x0099"),
    "backends": (2, b"ccid, vpcd,serial"),
    "backends-env-unknown": (10, b"pcsc,foo,,sim"),
    "log-debug": (3, b"debug"),
    "log-digit": (3, b"2"),
    "log-warn": (3, b"WARN"),
    "escape": (4, b"1"),
    "escape-off": (4, b"0"),
    "exchange-ms": (5, b"30000"),
    "poll-ms-bad": (6, b"-1"),
    "power-down-ms-big": (7, b"4294967296"),
}
for name, (var, val) in env.items():
    write("env", name, bytes([var]) + val)

# ---- vpcd card: chunks [k][len][bytes], one put on the line at each wait of the
# backend's (k bit 1: silence); messages are [len16][payload]
def vmsg(p):
    return struct.pack(">H", len(p)) + p
def vchunk(b, silent=False):
    out = b""
    for i in range(0, max(len(b), 1), 255):
        out += bytes([2 if silent else 0, len(b[i:i + 255])]) + b[i:i + 255]
    return out
write("vpcd", "t1-card", vchunk(vmsg(JCOP_ATR)) + vchunk(vmsg(b"\x90\x00")) + vchunk(vmsg(b"\x6A\x82")) + vchunk(vmsg(JCOP_ATR)))
write("vpcd", "long-answer", vchunk(vmsg(T0_ATR)) + vchunk(vmsg(b"\x00" * 300 + b"\x90\x00")) + vchunk(vmsg(b"\x01" * 20 + b"\x90\x00")))
write("vpcd", "atr-in-pieces", vchunk(vmsg(SIM_ATR)[:5]) + vchunk(vmsg(SIM_ATR)[5:]) + vchunk(vmsg(b"\x61\x10")))
write("vpcd", "silent-card", vchunk(vmsg(T0_ATR)) + vchunk(b"", silent=True))
write("vpcd", "unasked", vchunk(vmsg(T0_ATR) + vmsg(b"\x90\x00")) + vchunk(vmsg(b"\x90\x00")))
write("vpcd", "zero-length", vchunk(vmsg(T0_ATR)) + vchunk(b"\x00\x00"))

# ---- ICCD: [mode] then one answer per control request: [c][data]
def iin(data):
    return bytes([len(data)]) + data
OK = b"\x00"
b_atr = bytes([1]) + (iin(b"\x00\x02\x00") + OK + OK + iin(b"\x00" + JCOP_ATR) + OK + iin(b"\x00\x90\x00")
                      + OK + iin(b"\x80\x01\x00") + iin(b"\x00\x6A\x82") + iin(b"\x00\x01\x00") + OK + iin(b"\x00\x01\x00"))
write("iccd", "version-b", b_atr)
write("iccd", "version-b-status", bytes([1]) + iin(b"\x00\x00\x00") + OK + OK + iin(b"\x40\x02\xFE"))
a_atr = bytes([0]) + (iin(b"\x00") + OK + iin(b"\x00") + iin(T0_ATR) + OK + iin(b"\x40") + iin(b"\x20")
                      + iin(b"\x90\x00") + OK + iin(b"\x10") + OK + iin(b"\x20") + iin(b"\x6C\x10"))
write("iccd", "version-a", a_atr)
write("iccd", "version-a-absent", bytes([0]) + iin(b"\x80") + OK + iin(b"\x80"))

# ---- GemPC: [mode] then chunks [k][len][bytes]; k bit 0: a framed CCID message
def frame(m):
    return bytes([1, len(m)]) + m
def raw(b, silent=False):
    return bytes([2 if silent else 0, len(b)]) + b
fw = frame(ccid(0x83, b"GemTwin V2.00"))
notify = frame(ccid(0x83))
present = frame(ccid(0x81, status=1))
poweron = frame(ccid(0x80, T0_ATR))
params = frame(ccid(0x82, b"\x11\x00\x00\x0A\x00", param=0))
data_ok = frame(ccid(0x80, b"\x90\x00"))
write("gempc", "twin-t0", bytes([0]) + fw + notify + present + poweron + params + data_ok + frame(ccid(0x80, b"\x6A\x82")) + present)
write("gempc", "pinpad-card-events", bytes([1]) + fw + notify + raw(b"\x50\x03") + present + raw(b"\x80\x80") + poweron + raw(b"\x50\x02") + frame(ccid(0x81, status=2)))
write("gempc", "nak-and-noise", bytes([2]) + raw(b"\x03\x15\x16") + fw + raw(b"\xAA\x55") + notify + present)
write("gempc", "mute-card", bytes([0]) + fw + notify + present + frame(ccid(0x80, status=0x41, error=0xFE)))
write("gempc", "t1", bytes([0x80]) + fw + notify + present + frame(ccid(0x80, JCOP_ATR)) + frame(ccid(0x82, b"\x13\x10\x00\x45\x00\xFE\x00", param=1)) + frame(ccid(0x80, b"\x00\x40\x02\x90\x00\xD2")))

# ---- Phoenix: [mode] then raw line chunks; the echo of what is sent comes by itself
def s(b):
    return raw(b, silent=True)
write("phoenix", "t0-card", bytes([0]) + raw(T0_ATR) + s(b"") + raw(T0_ATR) + s(b"") + raw(b"\x60\xEE") + raw(b"\x90\x00") + raw(b"\x6C\x10") + s(b""))
write("phoenix", "inverse", bytes([0]) + raw(b"\x03") + raw(bytes([0x3F ^ 0x3F, 0x02])) + s(b""))
write("phoenix", "parity-marked", bytes([0x04]) + raw(b"\x3B\x02\xFF\x00\x14\x50") + s(b"") + raw(b"\xFF\xFF\x90\x00"))
write("phoenix", "t1-card", bytes([0x80]) + raw(JCOP_ATR) + s(b"") + raw(JCOP_ATR) + s(b"") + raw(b"\x00\x40\x02\x90\x00\xD2") + raw(b"\x00\x00\x02\x6A\x82\xE8"))
write("phoenix", "smartmouse-cd", bytes([0x0D | 0x40]) + raw(T0_ATR) + s(b"") + raw(b"\xFF\x12"))
