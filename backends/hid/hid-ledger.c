/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* APDUs over HID as Ledger devices frame them (LedgerHQ's hid-framing): every 64-byte
 * report is a channel (16-bit big-endian, 0x0101), the tag 0x05 and a 16-bit sequence
 * number from 0; the payload is the APDU's 16-bit length then the APDU, 57 bytes in the
 * first report and 59 in each next one. Answers (data and SW1 SW2) come framed the same
 * way. Reports on another channel are dropped; a wrong tag or sequence number ends the
 * exchange (SCARD_F_COMM_ERROR, logged). The first report of an answer may take as long
 * as the user does on the device (the exchange limit bounds it), each next one at most
 * 500 ms. */
#include "hid.h"

/* 3B 88 80 01, then eight historical bytes: 80 (compact-TLV), 56 "Ledger" (tag 5, issuer
 * data), then TCK. */
const uint8_t calais__ledger_atr[] = { 0x3B, 0x88, 0x80, 0x01, 0x80, 0x56, 0x4C, 0x65,
                                       0x64, 0x67, 0x65, 0x72, 0xE2 };
const size_t calais__ledger_atr_len = sizeof(calais__ledger_atr);

#define PACKET_MS 500u

static LONG io_rv(const char *name, enum calais__hid_status st, const char *what)
{
	if (st == CALAIS__HID_NO_DEVICE) {
		hid_info("%s: device gone (%s)", name, what);
		return SCARD_E_READER_UNAVAILABLE;
	}
	hid_warn("%s: %s failed: %s", name, what, calais__hid_status_name(st));
	return SCARD_F_COMM_ERROR;
}

static void header(uint8_t *rep, unsigned seq)
{
	memset(rep, 0, CALAIS__HID_REPORT);
	rep[0] = CALAIS__LEDGER_CHANNEL >> 8;
	rep[1] = CALAIS__LEDGER_CHANNEL & 0xFF;
	rep[2] = CALAIS__LEDGER_TAG;
	rep[3] = (uint8_t)(seq >> 8);
	rep[4] = (uint8_t)seq;
}

LONG calais__ledger_transmit(const struct calais__hid_ops *ops, struct calais__hid_dev *h,
                             const char *name, atomic_bool *cancel, const uint8_t *tx,
                             size_t tx_len, uint8_t *rx, size_t *rx_len, uint64_t deadline_ms)
{
	if (tx_len > CALAIS__LEDGER_MAX)
		return SCARD_E_INVALID_PARAMETER;
	uint8_t rep[CALAIS__HID_REPORT];
	size_t off = 0;
	unsigned seq = 0;
	do {
		header(rep, seq);
		size_t at = 5;
		if (seq == 0) {
			rep[5] = (uint8_t)(tx_len >> 8);
			rep[6] = (uint8_t)tx_len;
			at = 7;
		}
		size_t k = tx_len - off < CALAIS__HID_REPORT - at ? tx_len - off
		                                                   : CALAIS__HID_REPORT - at;
		if (k)
			memcpy(rep + at, tx + off, k);
		off += k;
		enum calais__hid_status st = ops->write(h, rep, sizeof(rep));
		if (st != CALAIS__HID_OK)
			return io_rv(name, st, "write");
		seq++;
	} while (off < tx_len);

	size_t cap = *rx_len, len = 0, got = 0;
	for (seq = 0; seq == 0 || got < len; seq++) {
		enum calais__hid_status st;
		bool cancelled;
		uint64_t until = seq == 0 ? deadline_ms
		                          : calais__now_ms() + PACKET_MS < deadline_ms
		                                    ? calais__now_ms() + PACKET_MS
		                                    : deadline_ms;
		for (;;) {
			st = calais__hid_read_until(ops, h, rep, until, cancel, &cancelled);
			if (st != CALAIS__HID_OK || cancelled ||
			    ((unsigned)rep[0] << 8 | rep[1]) == CALAIS__LEDGER_CHANNEL)
				break;
			hid_dbg("%s: report on channel %02X%02X dropped", name, rep[0], rep[1]);
		}
		if (cancelled)
			return SCARD_E_CANCELLED;
		if (st == CALAIS__HID_TIMEOUT) {
			if (seq == 0)
				hid_warn("%s: exchange limit reached waiting for the answer", name);
			else
				hid_warn("%s: answer cut short: %zu of %zu bytes, no report within %u ms",
				         name, got, len, PACKET_MS);
			return seq == 0 ? SCARD_E_TIMEOUT : SCARD_F_COMM_ERROR;
		}
		if (st != CALAIS__HID_OK)
			return io_rv(name, st, "read");
		unsigned rseq = (unsigned)rep[3] << 8 | rep[4];
		if (rep[2] != CALAIS__LEDGER_TAG || rseq != seq) {
			hid_warn("%s: report with tag 0x%02X and sequence %u where 0x%02X and %u were "
			         "due", name, rep[2], rseq, CALAIS__LEDGER_TAG, seq);
			return SCARD_F_COMM_ERROR;
		}
		size_t at = 5;
		if (seq == 0) {
			len = (size_t)rep[5] << 8 | rep[6];
			at = 7;
			if (len < 2) {
				hid_warn("%s: answer of %zu bytes (no status word)", name, len);
				return SCARD_F_COMM_ERROR;
			}
		}
		size_t k = len - got < CALAIS__HID_REPORT - at ? len - got : CALAIS__HID_REPORT - at;
		if (got + k <= cap)
			memcpy(rx + got, rep + at, k);
		got += k;
	}
	*rx_len = len;
	return len > cap ? SCARD_E_INSUFFICIENT_BUFFER : SCARD_S_SUCCESS;
}
