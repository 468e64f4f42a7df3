/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* T=0 (ISO/IEC 7816-3:2006 clause 10 and 12.2): short APDUs mapped to TPDUs (cases 1 to
 * 4), GET RESPONSE on 61xx and re-sending with the right Le on 6Cxx, extended APDUs
 * through ENVELOPE, and the character-level exchange with procedure bytes. No I/O of its
 * own: the transport supplies it through struct calais__t0_io, with the exchange's
 * deadline and cancel flag, which bound every wait. */
#include "calais-internal.h"

#define INS_GET_RESPONSE 0xC0
#define INS_ENVELOPE 0xC2

/* WT cut to what is left of the exchange: SCARD_E_CANCELLED once the caller cancels,
 * SCARD_E_TIMEOUT once the deadline has passed (never 0 ms, "no timeout" to some
 * transports). */
static LONG bound(const struct calais__t0_io *io, uint32_t *timeout)
{
	*timeout = io->wt_ms;
	if (io->cancelled && io->cancelled(io->user))
		return SCARD_E_CANCELLED;
	if (!io->deadline_ms)
		return SCARD_S_SUCCESS;
	uint64_t now = calais__now_ms();
	if (now >= io->deadline_ms)
		return SCARD_E_TIMEOUT;
	if (io->deadline_ms - now < *timeout)
		*timeout = (uint32_t)(io->deadline_ms - now);
	if (*timeout == 0)
		*timeout = 1;
	return SCARD_S_SUCCESS;
}

/* A wait that timed out: the card is mute (past WT), unless the exchange's own time ran
 * out first, which the caller reports as such. */
static LONG timed_out(const struct calais__t0_io *io, LONG rv)
{
	if (rv != SCARD_E_TIMEOUT)
		return rv;
	return io->deadline_ms && calais__now_ms() >= io->deadline_ms ? SCARD_E_TIMEOUT
	                                                              : SCARD_W_UNRESPONSIVE_CARD;
}

/* ---- character level ----------------------------------------------------------------- */

/* One TPDU over a byte link: header, then procedure bytes (10.3.3) drive the transfer.
 * in_len is the number of bytes the card is to send (case 2; P3 = 00 is 256 there, and
 * nothing in case 1). */
static LONG char_tpdu(const struct calais__t0_io *io, const uint8_t *tpdu, size_t n,
                      size_t in_len, uint8_t *resp, size_t *resp_len)
{
	if (n < 5)
		return SCARD_E_INVALID_PARAMETER;
	const uint8_t ins = tpdu[1];
	const uint8_t ins_inv = (uint8_t)(0xFFu - ins); /* byte-by-byte procedure byte */
	const size_t p3 = tpdu[4];
	const bool sending = n > 5;
	const size_t total = sending ? p3 : in_len;
	size_t done = 0, cap = *resp_len, got = 0;
	if (sending && n != 5 + p3)
		return SCARD_E_INVALID_PARAMETER;
	if (!sending && cap < total + 2)
		return SCARD_E_INSUFFICIENT_BUFFER;
	LONG rv = io->send(io->user, tpdu, 5);
	if (rv != SCARD_S_SUCCESS)
		return rv;
	for (unsigned nulls = 0;;) {
		uint8_t pb;
		uint32_t wt;
		if ((rv = bound(io, &wt)) != SCARD_S_SUCCESS)
			return rv;
		rv = io->recv(io->user, &pb, 1, wt);
		if (rv != SCARD_S_SUCCESS)
			return timed_out(io, rv);
		if (pb == 0x60) {
			/* NULL: the card asks for more time (each restarts WT); bounded in a row,
			 * and their total wait by the exchange's deadline. */
			if (++nulls > io->max_nulls)
				return SCARD_W_UNRESPONSIVE_CARD;
			continue;
		}
		if ((pb & 0xF0) == 0x60 || (pb & 0xF0) == 0x90) {
			uint8_t sw2;
			if ((rv = bound(io, &wt)) != SCARD_S_SUCCESS)
				return rv;
			rv = io->recv(io->user, &sw2, 1, wt);
			if (rv != SCARD_S_SUCCESS)
				return timed_out(io, rv);
			if (got + 2 > cap)
				return SCARD_E_INSUFFICIENT_BUFFER;
			resp[got] = pb;
			resp[got + 1] = sw2;
			*resp_len = got + 2;
			return SCARD_S_SUCCESS;
		}
		size_t chunk;
		if (pb == ins)
			chunk = total - done; /* ACK: all remaining bytes */
		else if (pb == ins_inv)
			chunk = total > done ? 1 : 0; /* one byte at a time */
		else
			return SCARD_F_COMM_ERROR; /* not a procedure byte */
		if (chunk == 0)
			return SCARD_F_COMM_ERROR; /* transfer asked for beyond P3, or in case 1 */
		if ((rv = bound(io, &wt)) != SCARD_S_SUCCESS)
			return rv;
		if (sending) {
			rv = io->send(io->user, tpdu + 5 + done, chunk);
		} else {
			rv = io->recv(io->user, resp + got, chunk, wt);
			got += rv == SCARD_S_SUCCESS ? chunk : 0;
		}
		if (rv != SCARD_S_SUCCESS)
			return timed_out(io, rv);
		done += chunk;
		nulls = 0;
	}
}

/* ---- APDU level --------------------------------------------------------------------- */

static LONG tpdu(const struct calais__t0_io *io, const uint8_t *t, size_t n, size_t in_len,
                 uint8_t *resp, size_t *resp_len)
{
	if (!io->tpdu)
		return char_tpdu(io, t, n, in_len, resp, resp_len);
	uint32_t wt;
	LONG rv = bound(io, &wt);
	return rv != SCARD_S_SUCCESS ? rv : io->tpdu(io->user, t, n, resp, resp_len, wt);
}

/* Sends one short TPDU and follows 6Cxx and 61xx as 12.2 describes, appending response
 * data to out (cap bytes). Returns the final SW in sw. */
static LONG exchange(const struct calais__t0_io *io, uint8_t *t, size_t n, size_t in_len,
                     size_t le, uint8_t *out, size_t cap, size_t *out_len, uint16_t *sw)
{
	uint8_t buf[258];
	size_t len = sizeof(buf);
	LONG rv = tpdu(io, t, n, in_len, buf, &len);
	if (rv != SCARD_S_SUCCESS)
		return rv;
	if (len < 2)
		return SCARD_F_COMM_ERROR;
	*sw = (uint16_t)(buf[len - 2] << 8 | buf[len - 1]);
	/* 6Cxx: wrong Le; the same command again with P3 = xx (case 2 only). */
	if (io->auto_get_response && (*sw >> 8) == 0x6C && n == 5) {
		t[4] = (uint8_t)*sw;
		len = sizeof(buf);
		rv = tpdu(io, t, n, t[4] ? t[4] : 256, buf, &len);
		if (rv != SCARD_S_SUCCESS)
			return rv;
		if (len < 2)
			return SCARD_F_COMM_ERROR;
		*sw = (uint16_t)(buf[len - 2] << 8 | buf[len - 1]);
	}
	size_t data = len - 2;
	if (*out_len + data > cap)
		return SCARD_E_INSUFFICIENT_BUFFER;
	memcpy(out + *out_len, buf, data);
	*out_len += data;
	/* 61xx: xx more bytes; GET RESPONSE until done, within Le when one was given. */
	for (unsigned rounds = 0; io->auto_get_response && (*sw >> 8) == 0x61; rounds++) {
		if (rounds > 256)
			return SCARD_F_COMM_ERROR; /* a card answering 61xx for ever */
		size_t avail = (*sw & 0xFF) ? (*sw & 0xFF) : 256;
		if (le && *out_len >= le)
			break;
		if (le && avail > le - *out_len)
			avail = le - *out_len;
		uint8_t gr[5] = { t[0] & 0x03 /* keep the logical channel */, INS_GET_RESPONSE, 0, 0,
			          (uint8_t)avail };
		len = sizeof(buf);
		rv = tpdu(io, gr, 5, avail, buf, &len);
		if (rv != SCARD_S_SUCCESS)
			return rv;
		if (len < 2)
			return SCARD_F_COMM_ERROR;
		*sw = (uint16_t)(buf[len - 2] << 8 | buf[len - 1]);
		data = len - 2;
		if (*out_len + data > cap)
			return SCARD_E_INSUFFICIENT_BUFFER;
		memcpy(out + *out_len, buf, data);
		*out_len += data;
	}
	return SCARD_S_SUCCESS;
}

LONG calais__t0_transceive(const struct calais__t0_io *io, const uint8_t *apdu, size_t n,
                           uint8_t *resp, size_t *resp_len)
{
	struct calais__apdu a;
	LONG rv = calais__apdu_parse(apdu, n, &a);
	if (rv != SCARD_S_SUCCESS)
		return rv;
	size_t cap = *resp_len, got = 0;
	uint16_t sw = 0;
	if (cap < 2)
		return SCARD_E_INSUFFICIENT_BUFFER;

	if (a.extended) {
		if (a.lc > 255 || a.le > 256) {
			/* ENVELOPE carries the whole command in pieces (7816-4 7.2.5); a card
			 * without it answers 6D00 or 6E00. */
			size_t off = 0;
			while (off < n) {
				size_t chunk = n - off > 255 ? 255 : n - off;
				uint8_t t[5 + 255] = { apdu[0] & 0x03, INS_ENVELOPE, 0, 0, (uint8_t)chunk };
				memcpy(t + 5, apdu + off, chunk);
				got = 0;
				rv = exchange(io, t, 5 + chunk, 0, a.le, resp, cap - 2, &got, &sw);
				if (rv != SCARD_S_SUCCESS)
					return rv;
				off += chunk;
				if (sw == 0x6D00 || sw == 0x6E00) {
					calais__info("T=0: the card has no ENVELOPE (SW %04X): extended APDU refused", sw);
					return SCARD_E_UNSUPPORTED_FEATURE;
				}
				if (off < n && sw != 0x9000)
					break; /* the card stopped the transfer: its SW is the answer */
			}
			resp[got] = (uint8_t)(sw >> 8);
			resp[got + 1] = (uint8_t)sw;
			*resp_len = got + 2;
			return SCARD_S_SUCCESS;
		}
		/* An extended encoding of a short command: send it short. */
	}

	uint8_t t[5 + 255];
	memcpy(t, apdu, 4);
	size_t tn;
	switch (a.cse) {
	case 1:
		t[4] = 0;
		tn = 5;
		break;
	case 2:
		t[4] = (uint8_t)(a.le == 256 ? 0 : a.le);
		tn = 5;
		break;
	default: /* 3 and 4: data goes out; case 4's answer comes with 61xx */
		t[4] = (uint8_t)a.lc;
		memcpy(t + 5, a.data, a.lc);
		tn = 5 + a.lc;
		break;
	}
	rv = exchange(io, t, tn, a.cse == 2 ? a.le : 0, a.cse == 4 || a.cse == 2 ? a.le : 0, resp,
	              cap - 2, &got, &sw);
	if (rv != SCARD_S_SUCCESS)
		return rv;
	resp[got] = (uint8_t)(sw >> 8);
	resp[got + 1] = (uint8_t)sw;
	*resp_len = got + 2;
	return SCARD_S_SUCCESS;
}

LONG calais__apdu_parse(const uint8_t *b, size_t n, struct calais__apdu *a)
{
	memset(a, 0, sizeof(*a));
	if (n < 4)
		return SCARD_E_INVALID_PARAMETER;
	if (n == 4) {
		a->cse = 1;
		return SCARD_S_SUCCESS;
	}
	if (n == 5) {
		a->cse = 2;
		a->le = b[4] ? b[4] : 256;
		return SCARD_S_SUCCESS;
	}
	if (b[4] != 0) {
		a->lc = b[4];
		a->data = b + 5;
		if (n == 5 + a->lc) {
			a->cse = 3;
			return SCARD_S_SUCCESS;
		}
		if (n == 6 + a->lc) {
			a->cse = 4;
			a->le = b[n - 1] ? b[n - 1] : 256;
			return SCARD_S_SUCCESS;
		}
		return SCARD_E_INVALID_PARAMETER;
	}
	a->extended = true;
	if (n == 7) {
		a->cse = 2;
		a->le = (size_t)b[5] << 8 | b[6];
		a->le = a->le ? a->le : 65536;
		return SCARD_S_SUCCESS;
	}
	a->lc = (size_t)b[5] << 8 | b[6];
	a->data = b + 7;
	if (a->lc == 0)
		return SCARD_E_INVALID_PARAMETER;
	if (n == 7 + a->lc) {
		a->cse = 3;
		return SCARD_S_SUCCESS;
	}
	if (n == 9 + a->lc) {
		a->cse = 4;
		a->le = (size_t)b[n - 2] << 8 | b[n - 1];
		a->le = a->le ? a->le : 65536;
		return SCARD_S_SUCCESS;
	}
	return SCARD_E_INVALID_PARAMETER;
}
