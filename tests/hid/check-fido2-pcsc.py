#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Calais' FIDO reader (the hid backend's NFC binding, on the HID simulator inside
fido-pcsc-bridge) against python-fido2's PC/SC client, fido2.pcsc.CtapPcscDevice, over a
connection object that forwards its APDUs to the bridge: SELECT and the CTAP2 probe,
getInfo through NFCCTAP_MSG, U2F VERSION, REGISTER and AUTHENTICATE (real keys in the
virtual authenticator, signatures verified by python-fido2) through the short-APDU
chaining and 61xx/GET RESPONSE python-fido2 does, a 1000-byte CBOR request (chained in 250-byte
pieces) and its answer, and keepalives turned into 91 00 and NFCCTAP_GETRESPONSE polls.
Exit 77 (skipped) without python-fido2. Usage: check-fido2-pcsc.py path/to/fido-pcsc-bridge"""
import struct
import subprocess
import sys

from fido2check import check, finish, u2f_register_authenticate  # first: it skips without python-fido2
from fido2.ctap import STATUS
from fido2.ctap1 import Ctap1
from fido2.ctap2 import Ctap2
from fido2.hid import CAPABILITY, CTAPHID
from fido2.pcsc import CtapPcscDevice

BRIDGE = sys.argv[1]


class BridgeConnection:
    """The part of a pyscard connection CtapPcscDevice uses."""

    def __init__(self, *args):
        self.args = list(args)
        self.proc = None
        self.apdus = []

    def connect(self):
        self.proc = subprocess.Popen([BRIDGE] + self.args, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE)

    def _call(self, apdu):
        self.proc.stdin.write(struct.pack(">H", len(apdu)) + apdu)
        self.proc.stdin.flush()
        hdr = self.proc.stdout.read(6)
        if len(hdr) != 6:
            raise EOFError("fido-pcsc-bridge ended")
        rv, n = struct.unpack(">iH", hdr)
        data = self.proc.stdout.read(n)
        if rv != 0:
            raise OSError("SCardTransmit: 0x%08X" % (rv & 0xFFFFFFFF))
        return data

    def getATR(self):
        return list(self._call(b""))

    def transmit(self, apdu, protocol=None):
        self.apdus.append(bytes(apdu))
        r = self._call(bytes(apdu))
        return list(r[:-2]), r[-2], r[-1]

    def disconnect(self):
        self.proc.stdin.close()
        self.proc.wait(10)


def main():
    conn = BridgeConnection("05")
    dev = CtapPcscDevice(conn, "Calais FIDO")
    atr = bytes(dev.get_atr())
    check("ATR", atr == bytes.fromhex("3b8a80018073c021c0544649444f89"), atr.hex())
    check("SELECT answered, CTAP2 probe passed", dev.capabilities & CAPABILITY.CBOR != 0,
          "capabilities 0x%02X" % dev.capabilities)
    info = Ctap2(dev).get_info()
    check("getInfo through NFCCTAP_MSG", info.versions == ["FIDO_2_0"], repr(info.versions))
    ctap1 = Ctap1(dev)
    check("U2F VERSION", ctap1.get_version() == "U2F_V2")
    u2f_register_authenticate(ctap1, "PC/SC: ")
    check("REGISTER's answer (over 256 bytes) through 61xx and GET RESPONSE",
          any(a[:2] == b"\x00\xc0" for a in conn.apdus))
    big = bytes((i * 3) & 0xFF for i in range(1000))
    resp = dev.call(CTAPHID.CBOR, b"\x01" + big)
    check("1000-byte CBOR request chained, answer whole", resp == b"\x00\x01" + big,
          "%d bytes" % len(resp))
    check("chaining used", any(a[0] == 0x90 for a in conn.apdus))
    dev.close()

    conn = BridgeConnection("05", "3")
    dev = CtapPcscDevice(conn, "Calais FIDO")
    seen = []
    resp = dev.call(CTAPHID.CBOR, b"\x01\xa0", on_keepalive=seen.append)
    check("CBOR answer after keepalives", resp == b"\x00\x01\xa0", resp.hex())
    check("keepalive status reached the client", seen == [STATUS.UPNEEDED], repr(seen))
    check("NFCCTAP_GETRESPONSE polled", any(a[:2] == b"\x80\x11" for a in conn.apdus))
    dev.close()

    conn = BridgeConnection("0C")  # CTAP2 only: FIDO_2_0
    dev = CtapPcscDevice(conn, "Calais FIDO")
    sel = [a for a in conn.apdus if a[:2] == b"\x00\xa4"]
    check("CTAP2-only key selected", len(sel) == 1 and dev.capabilities & CAPABILITY.CBOR != 0)
    dev.close()

    finish()


main()
