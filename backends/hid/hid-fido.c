/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The card in a FIDO reader: the USB authenticator answers APDUs as an NFC one does (CTAP
 * 2.1, "NFC" binding), so PC/SC FIDO clients (python-fido2's CtapPcscDevice, libfido2's
 * pcsc transport) use a USB key like an NFC key on a reader. SELECT of A0000006472F0001
 * answers "U2F_V2" (the key runs U2F, CTAPHID_MSG) or "FIDO_2_0" (CTAP2 only: the NMSG
 * capability). U2F APDUs (CLA 00: REGISTER 01, AUTHENTICATE 02, VERSION 03 and the vendor
 * range) go through CTAPHID_MSG, re-encoded with extended lengths as U2F HID wants them;
 * NFCCTAP_MSG (80 10) through CTAPHID_CBOR: with P1 bit 0x80 (the client polls) each
 * keepalive ends the APDU with 91 00 and the keepalive's status byte, and
 * NFCCTAP_GETRESPONSE (80 11) waits on; without it the wait goes through keepalives. Any
 * other command while an answer is still due cancels it (CTAPHID_CANCEL). Command chaining
 * (CLA bit 0x10) and extended lengths up to 7609 bytes; an answer longer than a short
 * APDU's Le comes in pieces with 61xx and GET RESPONSE (00 C0). */
#include "hid.h"

/* 3B 8A 80 01, then ten historical bytes: 80 (compact-TLV), 73 C0 21 C0 (card capabilities:
 * selection by full and partial DF name; command chaining, extended Lc and Le), 54 "FIDO"
 * (tag 5, issuer data), then TCK. */
const uint8_t calais__fido_atr[] = { 0x3B, 0x8A, 0x80, 0x01, 0x80, 0x73, 0xC0, 0x21,
                                     0xC0, 0x54, 0x46, 0x49, 0x44, 0x4F, 0x89 };
const size_t calais__fido_atr_len = sizeof(calais__fido_atr);

static const uint8_t AID_FIDO[] = { 0xA0, 0x00, 0x00, 0x06, 0x47, 0x2F, 0x00, 0x01 };

/* A parsed command APDU. */
struct apdu {
	uint8_t cla, ins, p1, p2;
	const uint8_t *data;
	size_t lc;
	size_t le;     /* 0 when absent */
	bool extended;
};

static bool parse(const uint8_t *tx, size_t n, struct apdu *a)
{
	if (n < 4)
		return false;
	*a = (struct apdu){ .cla = tx[0], .ins = tx[1], .p1 = tx[2], .p2 = tx[3] };
	if (n == 4)
		return true;
	if (n == 5) {
		a->le = tx[4] ? tx[4] : 256;
		return true;
	}
	if (tx[4] != 0) {
		a->lc = tx[4];
		a->data = tx + 5;
		if (n == 5 + a->lc)
			return true;
		if (n == 6 + a->lc) {
			a->le = tx[5 + a->lc] ? tx[5 + a->lc] : 256;
			return true;
		}
		return false;
	}
	/* Extended: 00 then two length bytes at least (six bytes is a short Lc of 0, which
	 * ISO 7816-4 does not allow). */
	if (n < 7)
		return false;
	a->extended = true;
	if (n == 7) {
		a->le = (size_t)tx[5] << 8 | tx[6];
		if (!a->le)
			a->le = 65536;
		return true;
	}
	a->lc = (size_t)tx[5] << 8 | tx[6];
	a->data = tx + 7;
	if (!a->lc)
		return false;
	if (n == 7 + a->lc)
		return true;
	if (n == 9 + a->lc) {
		a->le = (size_t)tx[7 + a->lc] << 8 | tx[8 + a->lc];
		if (!a->le)
			a->le = 65536;
		return true;
	}
	return false;
}

static LONG put(uint8_t *rx, size_t *rx_len, const uint8_t *data, size_t n, uint8_t sw1,
                uint8_t sw2)
{
	if (n + 2 > *rx_len) {
		*rx_len = n + 2;
		return SCARD_E_INSUFFICIENT_BUFFER;
	}
	if (n)
		memmove(rx, data, n);
	rx[n] = sw1;
	rx[n + 1] = sw2;
	*rx_len = n + 2;
	return SCARD_S_SUCCESS;
}

static LONG sw(uint8_t *rx, size_t *rx_len, uint16_t w)
{
	return put(rx, rx_len, NULL, 0, (uint8_t)(w >> 8), (uint8_t)w);
}

/* The next piece of a pending answer (GET RESPONSE, or the first piece). */
static LONG next_piece(struct calais__fido_card *k, size_t le, uint8_t *rx, size_t *rx_len)
{
	size_t left = k->out_len - k->out_off;
	size_t n = left < le ? left : le;
	size_t rest = left - n;
	uint8_t s1, s2;
	if (rest) {
		s1 = 0x61;
		s2 = (uint8_t)(rest >= 256 ? 0 : rest);
	} else {
		s1 = k->out[k->out_len];
		s2 = k->out[k->out_len + 1];
	}
	LONG rv = put(rx, rx_len, k->out + k->out_off, n, s1, s2);
	if (rv == SCARD_S_SUCCESS) {
		k->out_off += n;
		if (!rest)
			k->out_len = k->out_off = 0;
	}
	return rv;
}

/* The answer data (n bytes in src, which may be c->msg) and its status word, handed out
 * whole to extended-length clients, in Le-sized pieces to short ones. */
static LONG answer(struct calais__fido_card *k, const struct apdu *a, const uint8_t *src,
                   size_t n, uint8_t sw1, uint8_t sw2, uint8_t *rx, size_t *rx_len)
{
	size_t le = a->extended ? 65536 : (a->le ? a->le : 256);
	if (n <= le)
		return put(rx, rx_len, src, n, sw1, sw2);
	memmove(k->out, src, n);
	k->out[n] = sw1;
	k->out[n + 1] = sw2;
	k->out_len = n;
	k->out_off = 0;
	return next_piece(k, le, rx, rx_len);
}

LONG calais__fido_reset(struct calais__fido_card *k, uint64_t deadline_ms)
{
	k->selected = k->chaining = k->cbor_pending = false;
	k->chain_len = k->out_len = k->out_off = 0;
	return calais__ctaphid_open(k->c, deadline_ms);
}

/* NFCCTAP_MSG and NFCCTAP_GETRESPONSE: the CBOR answer, or 91 00 at a keepalive when the
 * client polls. */
static LONG cbor(struct calais__fido_card *k, const struct apdu *a, bool resume, bool poll,
                 uint8_t *rx, size_t *rx_len, uint64_t deadline_ms)
{
	struct calais__ctaphid *c = k->c;
	enum calais__ctaphid_ka ka = poll ? CALAIS__CTAPHID_KA_RETURN : CALAIS__CTAPHID_KA_WAIT;
	uint8_t rc = 0, st = 0;
	LONG rv = resume ? calais__ctaphid_resume(c, CALAIS__CTAPHID_CBOR, ka, &rc, &st, deadline_ms)
	                 : calais__ctaphid_call(c, CALAIS__CTAPHID_CBOR, a->data, a->lc, ka, &rc, &st,
	                                        deadline_ms);
	k->cbor_pending = false;
	if (rv == SCARD_E_UNSUPPORTED_FEATURE)
		return sw(rx, rx_len, 0x6D00);
	if (rv != SCARD_S_SUCCESS)
		return rv;
	if (rc == CALAIS__CTAPHID_KEEPALIVE) {
		k->cbor_pending = true;
		return put(rx, rx_len, &st, 1, 0x91, 0x00);
	}
	return answer(k, a, c->msg, c->msg_len, 0x90, 0x00, rx, rx_len);
}

/* A U2F APDU through CTAPHID_MSG, in U2F's extended form. */
static LONG u2f(struct calais__fido_card *k, const struct apdu *a, uint8_t *rx, size_t *rx_len,
                uint64_t deadline_ms)
{
	struct calais__ctaphid *c = k->c;
	if (c->caps & CALAIS__CTAPHID_CAP_NMSG)
		return sw(rx, rx_len, 0x6D00);
	static_assert(CALAIS__CTAPHID_MAX_MSG >= 7 + 2, "room for a header");
	if (a->lc > CALAIS__CTAPHID_MAX_MSG - 9)
		return sw(rx, rx_len, 0x6700);
	/* k->out is free here (any pending answer was dropped): the request is built in it. */
	uint8_t *m = k->out;
	size_t n = 0;
	m[n++] = a->cla;
	m[n++] = a->ins;
	m[n++] = a->p1;
	m[n++] = a->p2;
	m[n++] = 0;
	if (a->lc) {
		m[n++] = (uint8_t)(a->lc >> 8);
		m[n++] = (uint8_t)a->lc;
		memcpy(m + n, a->data, a->lc);
		n += a->lc;
	}
	m[n++] = 0;
	m[n++] = 0;
	uint8_t rc, st;
	LONG rv = calais__ctaphid_call(c, CALAIS__CTAPHID_MSG, m, n, CALAIS__CTAPHID_KA_WAIT, &rc,
	                               &st, deadline_ms);
	if (rv == SCARD_E_UNSUPPORTED_FEATURE)
		return sw(rx, rx_len, 0x6D00);
	if (rv != SCARD_S_SUCCESS)
		return rv;
	if (c->msg_len < 2) {
		hid_warn("%s: U2F answer of %zu bytes (no status word)", c->name, c->msg_len);
		return SCARD_F_COMM_ERROR;
	}
	size_t dn = c->msg_len - 2;
	return answer(k, a, c->msg, dn, c->msg[dn], c->msg[dn + 1], rx, rx_len);
}

static LONG dispatch(struct calais__fido_card *k, const struct apdu *a, uint8_t *rx,
                     size_t *rx_len, uint64_t deadline_ms)
{
	struct calais__ctaphid *c = k->c;
	if (a->cla == 0x00 && a->ins == 0xA4) {
		if (a->p1 == 0x04 && a->lc == sizeof(AID_FIDO) &&
		    memcmp(a->data, AID_FIDO, sizeof(AID_FIDO)) == 0) {
			k->selected = true;
			static const char u2f_v2[] = "U2F_V2", fido_2_0[] = "FIDO_2_0";
			bool nmsg = c->caps & CALAIS__CTAPHID_CAP_NMSG;
			const char *v = nmsg ? fido_2_0 : u2f_v2;
			return put(rx, rx_len, (const uint8_t *)v, strlen(v), 0x90, 0x00);
		}
		k->selected = false;
		return sw(rx, rx_len, 0x6A82);
	}
	if (a->cla != 0x00 && a->cla != 0x80)
		return sw(rx, rx_len, 0x6E00);
	if (!k->selected)
		return sw(rx, rx_len, 0x6985);
	if (a->cla == 0x80) {
		switch (a->ins) {
		case 0x10:
			if (!(c->caps & CALAIS__CTAPHID_CAP_CBOR))
				return sw(rx, rx_len, 0x6D00);
			return cbor(k, a, false, a->p1 & 0x80, rx, rx_len, deadline_ms);
		case 0x11:
			if (!k->cbor_pending)
				return sw(rx, rx_len, 0x6985);
			return cbor(k, a, true, true, rx, rx_len, deadline_ms);
		default:
			return sw(rx, rx_len, 0x6D00);
		}
	}
	/* CLA 00: U2F's REGISTER 01, AUTHENTICATE 02, VERSION 03, and the vendor range U2F
	 * leaves to the device (40..BF). */
	if ((a->ins >= 0x01 && a->ins <= 0x03) || (a->ins >= 0x40 && a->ins <= 0xBF))
		return u2f(k, a, rx, rx_len, deadline_ms);
	return sw(rx, rx_len, 0x6D00);
}

LONG calais__fido_transmit(struct calais__fido_card *k, const uint8_t *tx, size_t tx_len,
                           uint8_t *rx, size_t *rx_len, uint64_t deadline_ms)
{
	struct apdu a;
	if (!parse(tx, tx_len, &a))
		return sw(rx, rx_len, 0x6700);
	if (a.cla == 0x00 && a.ins == 0xC0) {
		if (!k->out_len)
			return sw(rx, rx_len, 0x6985);
		return next_piece(k, a.le ? a.le : 256, rx, rx_len);
	}
	k->out_len = k->out_off = 0; /* a pending answer nobody fetched */
	if (k->cbor_pending && !(a.cla == 0x80 && a.ins == 0x11)) {
		/* The client moved on: the CTAP2 command still running is stopped. */
		calais__ctaphid_abandon(k->c);
		k->cbor_pending = false;
	}
	if (a.cla & 0x10) {
		uint8_t hdr[4] = { (uint8_t)(a.cla & ~0x10), a.ins, a.p1, a.p2 };
		if (k->chaining && memcmp(hdr, k->chain_hdr, 4) != 0) {
			k->chaining = false;
			return sw(rx, rx_len, 0x6883);
		}
		if (!k->chaining) {
			memcpy(k->chain_hdr, hdr, 4);
			k->chain_len = 0;
			k->chaining = true;
		}
		if (a.lc > sizeof(k->chain) - k->chain_len) {
			k->chaining = false;
			return sw(rx, rx_len, 0x6700);
		}
		if (a.lc)
			memcpy(k->chain + k->chain_len, a.data, a.lc);
		k->chain_len += a.lc;
		return sw(rx, rx_len, 0x9000);
	}
	if (k->chaining) {
		k->chaining = false;
		uint8_t hdr[4] = { a.cla, a.ins, a.p1, a.p2 };
		if (memcmp(hdr, k->chain_hdr, 4) != 0)
			return sw(rx, rx_len, 0x6883);
		if (a.lc > sizeof(k->chain) - k->chain_len)
			return sw(rx, rx_len, 0x6700);
		if (a.lc)
			memcpy(k->chain + k->chain_len, a.data, a.lc);
		k->chain_len += a.lc;
		a.data = k->chain;
		a.lc = k->chain_len;
	}
	return dispatch(k, &a, rx, rx_len, deadline_ms);
}
