#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""A scripted smart card for QEMU's ccid-card-passthru (the VSCard protocol).

QEMU side:  -chardev socket,id=vsc,path=SOCK,server=on,wait=off
            -device usb-ccid,id=ccid1,serial=PASS
            -device ccid-card-passthru,chardev=vsc,bus=ccid1.0
This side:  connects to SOCK and sends VSC_Init, VSC_ReaderAdd, then VSC_ATR (the card
            is inserted), and answers each VSC_APDU that the guest sends through
            PC_to_RDR_XfrBlock. VSC_CardRemove, then VSC_ATR again, pull the card and
            insert it (the guest sees RDR_to_PC_NotifySlotChange).

Protocol (libcacard's vscard_common.h): a 12-byte header (type, reader_id, length, each
a big-endian u32), then the payload. VSC_Init's payload: magic b"VSCD", version (u32, 2),
capabilities (u32...). Debian 12 ships no vscclient, hence this file.

QEMU 7.2's usb-ccid claims TPDU level and T=0 only, but it hands the XfrBlock payload to
the card unchanged and returns the card's answer unchanged, so this card sees whatever
the host library sends: an APDU, or a T=0 TPDU (case 4 without Le, GET RESPONSE,
ENVELOPE). An answer (data + SW) longer than 374 bytes is dropped by QEMU without any
message: the host times out.

The card (any CLA):
  A4 04 00 06 F0 01 02 03 04 05  SELECT        -> 6F 08 84 06 <AID> 90 00 (other AIDs: 6A 82)
  EE 00 00 Lc data [Le]          echo          -> data 90 00
  ED 00 00 Lc data               sink          -> Lc(hi) Lc(lo) 90 00
  EF P1 P2 [Le]                  source        -> (P1<<8|P2) bytes, byte i = i & 0xFF, 90 00
  C6 P1 P2 [Le]                  T=0 chain     -> 61 P2: P2 bytes wait (P2 = 00: 256), byte
                                                  i = (i*7) & 0xFF, to be read with
  C0 00 00 Le                    GET RESPONSE  -> up to Le (00: 256) waiting bytes, then
                                                  61 xx while more wait, else the final SW;
                                                  69 85 when nothing waits
  C2 00 00 Lc data               ENVELOPE      -> gathers a command (ISO 7816-4 7.2.5, how
                                                  T=0 carries extended APDUs): 90 00 until
                                                  the gathered bytes are one whole APDU, then
                                                  its answer's data through 61xx/GET RESPONSE
  DD P1 00 00                    slow card     -> 90 00 after P1 x 100 ms
  anything else                                -> 6D 00
Only the standard library is used.
"""
import socket
import struct
import sys
import threading
import time

VSC_Init, VSC_Error, VSC_ReaderAdd, VSC_ReaderRemove, VSC_ATR, VSC_CardRemove, \
    VSC_APDU, VSC_Flush, VSC_FlushComplete = range(1, 10)
NAMES = {1: "Init", 2: "Error", 3: "ReaderAdd", 4: "ReaderRemove", 5: "ATR",
         6: "CardRemove", 7: "APDU", 8: "Flush", 9: "FlushComplete"}
VSCARD_VERSION = 2
READER_ID = 0

TEST_AID = bytes.fromhex("F00102030405")


def atr_with_tck(hexstr):
    b = bytes.fromhex(hexstr)
    tck = 0
    for x in b[1:]:
        tck ^= x
    return b + bytes([tck])


# 3B 08 "TESTCARD": T=0 only (no TD1), 8 historical bytes, no TCK
ATR_T0 = bytes.fromhex("3B08") + b"TESTCARD"
# 3B 88 80 01 "TESTCRD1" 7B: TD1=80 (T=0, TD2 follows), TD2=01 (T=1), TCK present
ATR_T0_T1 = atr_with_tck("3B888001" + b"TESTCRD1".hex())
assert ATR_T0_T1.hex() == "3b88800154455354435244317b"

SW_OK = b"\x90\x00"


def parse_apdu(apdu):
    """(header, data, le, complete) of a command APDU; le None when absent."""
    if len(apdu) < 4:
        return apdu, b"", None, False
    body = apdu[4:]
    if not body:
        return apdu[:4], b"", None, True                       # case 1
    if len(body) == 1:
        return apdu[:4], b"", body[0] or 256, True            # case 2S
    if body[0] == 0 and len(body) >= 3:                        # extended
        if len(body) == 3:
            return apdu[:4], b"", ((body[1] << 8) | body[2]) or 65536, True
        lc = (body[1] << 8) | body[2]
        data = body[3:3 + lc]
        rest = len(body) - 3 - lc
        if rest == 0:
            return apdu[:4], data, None, True
        if rest == 2:
            return apdu[:4], data, ((body[-2] << 8) | body[-1]) or 65536, True
        return apdu[:4], data, None, False
    lc = body[0]
    data = body[1:1 + lc]
    rest = len(body) - 1 - lc
    if rest == 0:
        return apdu[:4], data, None, True
    if rest == 1:
        return apdu[:4], data, body[-1] or 256, True
    return apdu[:4], data, None, False


def connect_unix(path, timeout):
    """Connects to a unix socket QEMU is about to create, retrying until timeout."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    deadline = time.monotonic() + timeout
    while True:
        try:
            sock.connect(path)
            return sock
        except (FileNotFoundError, ConnectionRefusedError):
            if time.monotonic() > deadline:
                sock.close()
                raise
            time.sleep(0.02)


class ScriptedCard:
    """The card's state between commands: what waits for GET RESPONSE, and the
    command an ENVELOPE sequence is gathering. Reset on every insertion."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.pending = b""          # data waiting for GET RESPONSE
        self.pending_sw = SW_OK     # the SW that ends it
        self.envelope = b""

    def _chain(self, data, sw):
        """Makes data wait for GET RESPONSE: answers 61 xx (xx = 00 for 256 or more)."""
        if not data:
            return sw
        self.pending, self.pending_sw = data, sw
        return bytes([0x61, min(len(data), 256) & 0xFF])

    def answer(self, apdu):
        """C-APDU (or T=0 TPDU) bytes -> R-APDU bytes."""
        if len(apdu) < 4:
            return bytes.fromhex("6700")
        ins, p1, p2 = apdu[1], apdu[2], apdu[3]
        if ins == 0xC0:                                     # GET RESPONSE
            if not self.pending:
                return bytes.fromhex("6985")
            _, _, le, _ = parse_apdu(apdu)
            n = min(le or 256, len(self.pending))
            out, self.pending = self.pending[:n], self.pending[n:]
            if self.pending:
                return out + bytes([0x61, min(len(self.pending), 256) & 0xFF])
            return out + self.pending_sw
        self.pending = b""
        if ins == 0xC2:                                     # ENVELOPE
            _, data, _, _ = parse_apdu(apdu)
            self.envelope += data
            if len(self.envelope) > 70000:
                self.envelope = b""
                return bytes.fromhex("6700")
            _, _, _, complete = parse_apdu(self.envelope)
            if not complete or len(self.envelope) < 4:
                return SW_OK
            inner, self.envelope = self.envelope, b""
            r = self.answer(inner)
            if len(r) >= 2 and r[-2] == 0x61:               # the inner command chains itself
                return r
            return self._chain(r[:-2], r[-2:])
        self.envelope = b""
        _, data, le, _ = parse_apdu(apdu)
        if ins == 0xA4 and p1 == 0x04:
            if data == TEST_AID:
                return bytes([0x6F, 2 + len(TEST_AID), 0x84, len(TEST_AID)]) + TEST_AID + SW_OK
            return bytes.fromhex("6A82")
        if ins == 0xEE:
            return data + SW_OK
        if ins == 0xED:
            return struct.pack(">H", len(data)) + SW_OK
        if ins == 0xEF:
            n = (p1 << 8) | p2
            return bytes(i & 0xFF for i in range(n)) + SW_OK
        if ins == 0xC6:
            n = p2 or 256
            return self._chain(bytes((i * 7) & 0xFF for i in range(n)), SW_OK)
        if ins == 0xDD:
            time.sleep(p1 / 10.0)
            return SW_OK
        return bytes.fromhex("6D00")


def card_answer(apdu):
    """Stateless form, for a quick check from the command line."""
    return ScriptedCard().answer(apdu)


class VSCardClient:
    def __init__(self, path, log=None, timeout=10.0, quiet_after=60):
        self.log = log or (lambda s: print(s, flush=True))
        self.card = ScriptedCard()
        self.quiet_after = quiet_after
        self.sock = connect_unix(path, timeout)
        self.lock = threading.Lock()
        self.replies = []          # VSC_Error codes received
        self.cond = threading.Condition()
        self.apdus = 0
        self.running = True
        self.peer_init = threading.Event()
        self.thread = threading.Thread(target=self._reader, daemon=True)
        self.thread.start()

    def _send(self, mtype, payload=b"", reader_id=READER_ID):
        hdr = struct.pack(">III", mtype, reader_id, len(payload))
        with self.lock:
            self.sock.sendall(hdr + payload)

    def _recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf

    def _reader(self):
        try:
            while self.running:
                mtype, rid, length = struct.unpack(">III", self._recv_exact(12))
                payload = self._recv_exact(length) if length else b""
                if mtype == VSC_APDU:
                    self.apdus += 1
                    resp = self.card.answer(payload)
                    if self.apdus <= self.quiet_after or self.apdus % 100 == 0:
                        self.log("vscard: APDU #%d %dB %s%s -> %dB ..%s" % (
                            self.apdus, len(payload), payload[:12].hex(),
                            ".." if len(payload) > 12 else "", len(resp), resp[-2:].hex()))
                    if len(resp) > 374:
                        self.log("vscard: note: a %d-byte answer is more than QEMU's usb-ccid "
                                 "passes (374): the guest will get no answer" % len(resp))
                    self._send(VSC_APDU, resp, rid)
                elif mtype == VSC_Init:
                    magic = payload[:4]
                    ver = struct.unpack(">I", payload[4:8])[0] if len(payload) >= 8 else None
                    self.log("vscard: peer Init magic=%r version=%s" % (magic, ver))
                    self.peer_init.set()
                elif mtype == VSC_Error:
                    code = struct.unpack(">I", payload[:4])[0] if len(payload) >= 4 else None
                    with self.cond:
                        self.replies.append(code)
                        self.cond.notify_all()
                elif mtype == VSC_Flush:
                    self._send(VSC_FlushComplete, b"", rid)
                else:
                    self.log("vscard: unexpected message %s" % NAMES.get(mtype, mtype))
        except (EOFError, OSError):
            if self.running:
                self.log("vscard: connection closed")

    def _wait_reply(self, what, timeout=5.0):
        with self.cond:
            if not self.cond.wait_for(lambda: self.replies, timeout):
                raise TimeoutError("no VSC_Error reply to " + what)
            code = self.replies.pop(0)
        self.log("vscard: %s -> %s" % (what, "SUCCESS" if code == 0 else "error %s" % code))
        return code

    def init(self):
        self._send(VSC_Init, b"VSCD" + struct.pack(">II", VSCARD_VERSION, 0), 0xFFFFFFFF)
        if not self.peer_init.wait(5):
            raise TimeoutError("no VSC_Init from QEMU")

    def reader_add(self, name=b"calais-test-reader"):
        self._send(VSC_ReaderAdd, name, 0xFFFFFFFF)
        return self._wait_reply("ReaderAdd")

    def insert(self, atr=ATR_T0):
        self.card.reset()
        self._send(VSC_ATR, atr)
        return self._wait_reply("ATR %s" % atr.hex())

    def remove(self):
        self._send(VSC_CardRemove)
        return self._wait_reply("CardRemove")

    def close(self):
        self.running = False
        try:
            self.sock.close()
        except OSError:
            pass


def _selftest():
    c = ScriptedCard()
    h = bytes.fromhex
    assert c.answer(h("00A4040006F00102030405")) == h("6F0884 06F00102030405 9000".replace(" ", ""))
    assert c.answer(h("00A4040006F00102030406")) == h("6A82")
    assert c.answer(h("80EE000003AABBCC00")) == h("AABBCC9000")
    assert c.answer(h("80EF000202")) == h("00019000")
    assert len(c.answer(h("80EF010000"))) == 258
    assert c.answer(h("80C600C800")) == h("61C8")
    r = c.answer(h("00C00000C8"))
    assert r == bytes((i * 7) & 0xFF for i in range(200)) + SW_OK
    assert c.answer(h("00C0000010")) == h("6985")
    # T=0 ENVELOPE of an extended case-2 command asking for 372 bytes
    assert c.answer(h("80C200000780EF01740001 74".replace(" ", ""))) == h("6100")
    r1 = c.answer(h("00C0000000"))
    assert len(r1) == 258 and r1[-2:] == h("6174")
    r2 = c.answer(h("00C0000074"))
    assert r1[:-2] + r2 == bytes(i & 0xFF for i in range(372)) + SW_OK
    # a long extended echo gathered over two ENVELOPEs
    cmd = h("80EE0000000190") + bytes(400) + h("0000")
    assert cmd[:4] == h("80EE0000")
    assert c.answer(bytes([0x80, 0xC2, 0, 0, 255]) + cmd[:255]) == SW_OK
    assert c.answer(bytes([0x80, 0xC2, 0, 0, len(cmd) - 255]) + cmd[255:]) == h("6100")
    assert c.answer(h("80EE000000")) != h("6100")  # another command drops what waited
    assert c.answer(h("80120000")) == h("6D00")
    print("vscard self-test: ok")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--selftest":
        _selftest()
        sys.exit(0)
    # standalone: python3 vscard.py SOCK  (insert the card, serve APDUs for ever)
    cl = VSCardClient(sys.argv[1])
    cl.init()
    cl.reader_add()
    cl.insert()
    while True:
        time.sleep(3600)
