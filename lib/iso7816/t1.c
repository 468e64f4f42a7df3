/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* T=1 (ISO/IEC 7816-3:2006 clause 11): I-, R- and S-blocks, NAD, chaining both ways,
 * IFS/WTX/RESYNCH/ABORT, LRC and CRC, sequence numbers, and the error handling rules
 * (retransmission, then resynchronisation, then a clear failure). No I/O of its own: the
 * transport exchanges whole blocks through struct calais__t1. Every call is bounded: its
 * waits by the caller's deadline and cancel flag, the card's S-requests by the caps in
 * iso7816.h. */
#include "calais-internal.h"

#define PCB_R 0x80
#define PCB_S 0xC0
#define S_RESYNCH 0x00
#define S_IFS 0x01
#define S_ABORT 0x02
#define S_WTX 0x03
#define S_RESPONSE 0x20
#define MAX_RETRIES 3

static bool is_r(uint8_t pcb) { return (pcb & 0xC0) == PCB_R; }
static bool is_s(uint8_t pcb) { return (pcb & 0xC0) == PCB_S; }

/* The CRC real cards and readers use (libccid, OpenCT, a GemPC Twin's trace): CRC-16/CCITT
 * reflected (polynomial 1021 taken LSB first, i.e. 8408), initial FFFF, no final XOR; the
 * register's high byte goes first on the line (calais__t1_edc). */
static uint16_t crc16(const uint8_t *b, size_t n)
{
	uint16_t v = 0xFFFF;
	for (size_t i = 0; i < n; i++) {
		v ^= b[i];
		for (int k = 0; k < 8; k++)
			v = (uint16_t)(v & 1 ? (v >> 1) ^ 0x8408 : v >> 1);
	}
	return v;
}

size_t calais__t1_edc(bool crc, const uint8_t *b, size_t n, uint8_t out[2])
{
	if (crc) {
		uint16_t v = crc16(b, n);
		out[0] = (uint8_t)(v >> 8);
		out[1] = (uint8_t)v;
		return 2;
	}
	uint8_t x = 0;
	for (size_t i = 0; i < n; i++)
		x ^= b[i];
	out[0] = x;
	return 1;
}

uint8_t calais__t1_ifs(unsigned v)
{
	return v == 0 ? 32 : v > 254 ? 254 : (uint8_t)v;
}

void calais__t1_init(struct calais__t1 *t, const struct calais__atr *a)
{
	uint8_t keep_nad = t->nad;
	memset(&t->ns, 0, sizeof(*t) - offsetof(struct calais__t1, ns));
	t->nad = keep_nad;
	t->ifsc = calais__t1_ifs(a ? a->ifsc : 32);
	t->ifsd = 32;
	t->crc = a && a->edc_crc;
}

static const char *who(const struct calais__t1 *t)
{
	return t->name ? t->name : "card";
}

/* A public call starts: its counts and its deadline flag are its own. */
static void call_start(struct calais__t1 *t)
{
	t->n_wtx = t->n_wtx_quick = t->n_ifs = t->n_empty = 0;
	t->expired = false;
}

/* Cuts a wait to what is left of the call: SCARD_E_CANCELLED once the caller cancels,
 * SCARD_E_TIMEOUT (t->expired) once the deadline has passed. Never 0 ms, which some
 * transports read as "no timeout". */
static LONG bound(struct calais__t1 *t, uint32_t *timeout)
{
	if (t->cancelled && t->cancelled(t->user))
		return SCARD_E_CANCELLED;
	if (!t->deadline_ms)
		return SCARD_S_SUCCESS;
	uint64_t now = calais__now_ms();
	if (now >= t->deadline_ms) {
		t->expired = true;
		return SCARD_E_TIMEOUT;
	}
	if (t->deadline_ms - now < *timeout)
		*timeout = (uint32_t)(t->deadline_ms - now);
	if (*timeout == 0)
		*timeout = 1;
	return SCARD_S_SUCCESS;
}

/* Ends the call at once: the transport's failure, a cancel, or the deadline. Missing or
 * bad blocks (SCARD_E_TIMEOUT, SCARD_F_COMM_ERROR within the deadline) are retried. */
static bool fatal(const struct calais__t1 *t, LONG rv)
{
	return t->expired ||
	       (rv != SCARD_S_SUCCESS && rv != SCARD_F_COMM_ERROR && rv != SCARD_E_TIMEOUT);
}

/* Builds and sends one block; receives the answer into rx and checks its framing.
 * Returns SCARD_S_SUCCESS, SCARD_F_COMM_ERROR (bad block: EDC, length, NAD),
 * SCARD_E_TIMEOUT, or a transport error. */
static LONG xfer(struct calais__t1 *t, uint8_t pcb, const uint8_t *inf, size_t len,
                 uint8_t *rx, size_t *rx_len, uint32_t wtx)
{
	uint8_t *blk = t->last;
	if (len > 254)
		return SCARD_F_INTERNAL_ERROR; /* never: every IFS is bounded (calais__t1_ifs) */
	blk[0] = t->nad;
	blk[1] = pcb;
	blk[2] = (uint8_t)len;
	if (len)
		memcpy(blk + 3, inf, len);
	size_t n = 3 + len;
	n += calais__t1_edc(t->crc, blk, n, blk + n);
	t->last_len = n;
	if (!(pcb & 0x80)) {
		memcpy(t->last_i, blk, n);
		t->last_i_len = n;
	}
	return calais__t1_resend(t, rx, rx_len, wtx);
}

/* A block over a byte link: the prologue within BWT, then LEN + EDC bytes, each within
 * CWT of the previous one (the transport's recv timeout applies per call). */
static LONG byte_xfer(struct calais__t1 *t, uint8_t *rx, size_t *rx_len, uint32_t timeout)
{
	LONG rv = t->send(t->user, t->last, t->last_len);
	if (rv != SCARD_S_SUCCESS)
		return rv;
	if (*rx_len < 3)
		return SCARD_E_INSUFFICIENT_BUFFER;
	rv = t->recv(t->user, rx, 1, timeout);
	uint32_t cwt = t->cwt_ms ? t->cwt_ms : timeout;
	if (rv == SCARD_S_SUCCESS && (rv = bound(t, &cwt)) == SCARD_S_SUCCESS)
		rv = t->recv(t->user, rx + 1, 2, cwt);
	if (rv != SCARD_S_SUCCESS)
		return rv;
	size_t rest = (size_t)rx[2] + (t->crc ? 2 : 1);
	if (rx[2] == 0xFF || 3 + rest > *rx_len) {
		t->rx_err = 2;
		return SCARD_F_COMM_ERROR; /* a length no block can have */
	}
	for (size_t i = 0; i < rest; i++) {
		cwt = t->cwt_ms ? t->cwt_ms : timeout;
		if ((rv = bound(t, &cwt)) != SCARD_S_SUCCESS)
			return rv;
		rv = t->recv(t->user, rx + 3 + i, 1, cwt);
		if (rv == SCARD_E_TIMEOUT) {
			t->rx_err = 2;
			return SCARD_F_COMM_ERROR; /* CWT exceeded: a block cut short */
		}
		if (rv != SCARD_S_SUCCESS)
			return rv;
	}
	*rx_len = 3 + rest;
	return SCARD_S_SUCCESS;
}

LONG calais__t1_resend(struct calais__t1 *t, uint8_t *rx, size_t *rx_len, uint32_t wtx)
{
	size_t cap = *rx_len;
	/* BWT times the WTX multiplier (up to 255 x BWI 15's 16 min), cut to the deadline. */
	uint64_t w = (uint64_t)t->bwt_ms * (wtx ? wtx : 1);
	uint32_t timeout = w > UINT32_MAX ? UINT32_MAX : (uint32_t)w;
	LONG rv = bound(t, &timeout);
	if (rv != SCARD_S_SUCCESS)
		return rv;
	t->sent_us = calais__now_us();
	t->rx_err = 1; /* the transport's own SCARD_F_COMM_ERROR: a parity error */
	rv = t->xfer ? t->xfer(t->user, t->last, t->last_len, rx, rx_len, timeout)
	             : byte_xfer(t, rx, rx_len, timeout);
	if (rv == SCARD_E_TIMEOUT && t->deadline_ms && calais__now_ms() >= t->deadline_ms)
		t->expired = true;
	if (rv != SCARD_S_SUCCESS)
		return rv;
	size_t edc = t->crc ? 2 : 1;
	t->rx_err = 2;
	if (*rx_len > cap || *rx_len < 3 + edc || rx[2] == 0xFF || *rx_len != 3 + (size_t)rx[2] + edc)
		return SCARD_F_COMM_ERROR;
	uint8_t want[2];
	calais__t1_edc(t->crc, rx, 3 + rx[2], want);
	if (memcmp(want, rx + 3 + rx[2], edc) != 0) {
		t->rx_err = 1;
		return SCARD_F_COMM_ERROR;
	}
	/* The card answers to our node addresses swapped; only the default 00 is used. */
	if (rx[0] != (uint8_t)((t->nad & 0x0F) << 4 | t->nad >> 4))
		return SCARD_F_COMM_ERROR;
	return SCARD_S_SUCCESS;
}

/* After errors: resynchronise (11.6.3.2 rule 6); the command is then lost. Three
 * RESYNCH requests unanswered: the card is unresponsive, to be deactivated by the
 * caller. */
static LONG resynch(struct calais__t1 *t)
{
	uint8_t rx[3 + 254 + 2];
	for (int i = 0; i < MAX_RETRIES; i++) {
		size_t rl = sizeof(rx);
		LONG rv = xfer(t, PCB_S | S_RESYNCH, NULL, 0, rx, &rl, 0);
		if (rv == SCARD_S_SUCCESS && rx[1] == (PCB_S | S_RESPONSE | S_RESYNCH)) {
			t->ns = t->nr = 0;
			t->last_i_len = 0;
			calais__warn("T=1 (%s): resynchronised after transmission errors", who(t));
			return SCARD_F_COMM_ERROR;
		}
		if (fatal(t, rv))
			return rv;
	}
	calais__warn("T=1 (%s): no answer to RESYNCH: card unresponsive", who(t));
	return SCARD_W_UNRESPONSIVE_CARD;
}

LONG calais__t1_resynch(struct calais__t1 *t)
{
	call_start(t);
	LONG rv = resynch(t);
	return rv == SCARD_F_COMM_ERROR ? SCARD_S_SUCCESS : rv;
}

/* An answer that is a valid block but not one the protocol allows here. */
static LONG invalid(struct calais__t1 *t)
{
	t->rx_err = 2;
	return SCARD_F_COMM_ERROR;
}

/* Answers an S-request from the card, counted against the caps (iso7816.h). *stop: the
 * call ends with the code returned (SCARD_F_COMM_ERROR: the card aborted the chain, or a
 * storm of requests). */
static LONG s_request(struct calais__t1 *t, const uint8_t *rx, uint8_t *next, size_t *next_len,
                      uint32_t *wtx, bool *stop)
{
	uint8_t type = rx[1] & 0x1F, inf = rx[2] ? rx[3] : 0;
	*stop = false;
	switch (type) {
	case S_WTX: {
		/* The card needs more time: the next wait is BWT times this multiplier. Asked
		 * again within a tenth of BWT of our block, the last grant went unused. */
		bool quick = calais__now_us() - t->sent_us < (uint64_t)t->bwt_ms * 100u;
		t->n_wtx_quick = quick ? t->n_wtx_quick + 1 : 0;
		if (t->n_wtx_quick > CALAIS__T1_MAX_WTX_QUICK || ++t->n_wtx > CALAIS__T1_MAX_WTX) {
			calais__warn("T=1 (%s): WTX storm: %u requests, %u of them at once in a row; "
			             "exchange abandoned", who(t), t->n_wtx, t->n_wtx_quick);
			*stop = true;
			return SCARD_F_COMM_ERROR;
		}
		*wtx = inf ? inf : 1;
		break;
	}
	case S_IFS:
		if (rx[2] != 1 || inf == 0 || inf == 0xFF)
			return invalid(t);
		if (++t->n_ifs > CALAIS__T1_MAX_IFS) {
			calais__warn("T=1 (%s): IFS storm: more than %u S(IFS) requests in one "
			             "exchange; exchange abandoned", who(t), CALAIS__T1_MAX_IFS);
			*stop = true;
			return SCARD_F_COMM_ERROR;
		}
		t->ifsc = inf;
		break;
	case S_ABORT:
		break;
	default:
		return invalid(t); /* RESYNCH is the interface device's alone */
	}
	size_t rl = *next_len;
	LONG rv = xfer(t, (uint8_t)(PCB_S | S_RESPONSE | type), rx + 3, rx[2], next, &rl, *wtx);
	*next_len = rl;
	/* After an ABORT the chain is gone whatever the card says next (or if it says
	 * nothing); a transport failure, a cancel or the deadline still win. */
	if (type == S_ABORT && !fatal(t, rv)) {
		calais__warn("T=1 (%s): the card aborted the chain", who(t));
		*stop = true;
		return SCARD_F_COMM_ERROR;
	}
	return rv;
}

/* S(ABORT request), resent up to three times, then RESYNCH (rule 7.3). */
static LONG abort_chain(struct calais__t1 *t)
{
	uint8_t rx[3 + 254 + 2];
	for (int i = 0; i < MAX_RETRIES; i++) {
		size_t rl = sizeof(rx);
		LONG rv = xfer(t, PCB_S | S_ABORT, NULL, 0, rx, &rl, 0);
		if (rv == SCARD_S_SUCCESS && rx[1] == (PCB_S | S_RESPONSE | S_ABORT))
			return SCARD_S_SUCCESS;
		if (fatal(t, rv))
			return rv;
	}
	return resynch(t);
}

LONG calais__t1_abort(struct calais__t1 *t)
{
	call_start(t);
	return abort_chain(t);
}

LONG calais__t1_set_ifsd(struct calais__t1 *t, uint8_t ifsd)
{
	uint8_t rx[3 + 254 + 2];
	if (ifsd == 0 || ifsd == 0xFF)
		return SCARD_E_INVALID_PARAMETER;
	call_start(t);
	for (int i = 0; i < MAX_RETRIES; i++) {
		size_t rl = sizeof(rx);
		LONG rv = xfer(t, PCB_S | S_IFS, &ifsd, 1, rx, &rl, 0);
		if (rv == SCARD_S_SUCCESS && rx[1] == (PCB_S | S_RESPONSE | S_IFS) && rx[2] == 1 &&
		    rx[3] == ifsd) {
			t->ifsd = ifsd;
			return SCARD_S_SUCCESS;
		}
		if (fatal(t, rv))
			return rv;
	}
	return resynch(t);
}

/* The card's answer does not fit: its chain is aborted so the next command starts in
 * step (a card left half-way through a chain would take that command for an R-block's
 * reply). */
static LONG too_long(struct calais__t1 *t, size_t cap)
{
	calais__warn("T=1 (%s): the answer is longer than the %zu bytes given for it; chain "
	             "aborted", who(t), cap);
	LONG rv = abort_chain(t);
	return rv == SCARD_S_SUCCESS || rv == SCARD_F_COMM_ERROR ? SCARD_E_INSUFFICIENT_BUFFER : rv;
}

LONG calais__t1_transceive(struct calais__t1 *t, const uint8_t *apdu, size_t n, uint8_t *resp,
                           size_t *resp_len)
{
	uint8_t rx[3 + 254 + 2];
	size_t cap = *resp_len, got = 0, off = 0;
	unsigned errors = 0;
	uint32_t wtx = 0;
	bool sending = true; /* our last I-block is not acknowledged by the card's I-block yet */
	*resp_len = 0;
	if (!n)
		return SCARD_E_INVALID_PARAMETER;
	call_start(t);
	t->ifsc = calais__t1_ifs(t->ifsc);

	/* The first I-block. */
	size_t chunk = n > t->ifsc ? t->ifsc : n;
	bool more = chunk < n;
	size_t rl = sizeof(rx);
	LONG rv = xfer(t, (uint8_t)(t->ns << 6 | (more ? 0x20 : 0)), apdu, chunk, rx, &rl, wtx);
	for (;;) {
		if (fatal(t, rv))
			return rv;
		wtx = 0;
		if (rv != SCARD_S_SUCCESS) {
			/* A bad or missing block (rule 7.1): an R-block asks for the expected one,
			 * up to three times; its code says EDC/parity error (1) or another (2). */
			if (++errors > MAX_RETRIES)
				return resynch(t);
			uint8_t code = rv == SCARD_E_TIMEOUT ? 2 : t->rx_err;
			rl = sizeof(rx);
			rv = xfer(t, (uint8_t)(PCB_R | t->nr << 4 | code), NULL, 0, rx, &rl, 0);
			continue;
		}
		uint8_t pcb = rx[1];
		if (is_s(pcb)) {
			if (pcb & S_RESPONSE) {
				rv = invalid(t); /* a response nobody asked for */
				continue;
			}
			rl = sizeof(rx);
			bool stop;
			rv = s_request(t, rx, rx, &rl, &wtx, &stop);
			if (stop)
				return rv;
			continue;
		}
		if (is_r(pcb)) {
			uint8_t nr = (pcb >> 4) & 1;
			if (rx[2] != 0) {
				rv = invalid(t); /* an R-block has no INF */
				continue;
			}
			if (!sending) {
				/* In the card's chain our blocks are acknowledgements: the card did
				 * not get the last one; it goes again. */
				if (++errors > MAX_RETRIES)
					return resynch(t);
				rl = sizeof(rx);
				rv = xfer(t, (uint8_t)(PCB_R | t->nr << 4), NULL, 0, rx, &rl, 0);
				continue;
			}
			if (more && nr != t->ns) {
				/* Acknowledges our chained block: send the next one. */
				t->ns ^= 1;
				off += chunk;
				chunk = n - off > t->ifsc ? t->ifsc : n - off;
				more = off + chunk < n;
				errors = 0;
				rl = sizeof(rx);
				rv = xfer(t, (uint8_t)(t->ns << 6 | (more ? 0x20 : 0)), apdu + off, chunk,
				          rx, &rl, 0);
				continue;
			}
			if (nr != t->ns) {
				rv = invalid(t); /* acknowledges a chain we did not send */
				continue;
			}
			/* The card asks for our last I-block again (rules 7.1, 7.4): resent as it
			 * was, whatever we sent since (an R-block, an S-response). */
			if (++errors > MAX_RETRIES)
				return resynch(t);
			memcpy(t->last, t->last_i, t->last_i_len);
			t->last_len = t->last_i_len;
			rl = sizeof(rx);
			rv = calais__t1_resend(t, rx, &rl, 0);
			continue;
		}
		/* An I-block from the card: the answer (or a piece of it). */
		if (sending && more) {
			rv = invalid(t); /* the card must acknowledge our chain first */
			continue;
		}
		if (((pcb >> 6) & 1) != t->nr) {
			rv = invalid(t); /* wrong sequence number */
			continue;
		}
		if (sending) {
			sending = false;
			t->ns ^= 1;
		}
		t->nr ^= 1;
		errors = 0;
		bool chained = (pcb & 0x20) != 0;
		if (got + rx[2] > cap) {
			if (!chained)
				return SCARD_E_INSUFFICIENT_BUFFER; /* the exchange is over: in step */
			return too_long(t, cap);
		}
		memcpy(resp + got, rx + 3, rx[2]);
		got += rx[2];
		if (!chained)
			break;
		if (rx[2] == 0 && ++t->n_empty > CALAIS__T1_MAX_EMPTY) {
			calais__warn("T=1 (%s): more than %u empty chained I-blocks; chain aborted",
			             who(t), CALAIS__T1_MAX_EMPTY);
			LONG arv = abort_chain(t);
			return arv == SCARD_S_SUCCESS ? SCARD_F_COMM_ERROR : arv;
		}
		if (rx[2] != 0)
			t->n_empty = 0;
		/* The card chains: acknowledge and take the next piece. */
		rl = sizeof(rx);
		rv = xfer(t, (uint8_t)(PCB_R | t->nr << 4), NULL, 0, rx, &rl, 0);
	}
	*resp_len = got;
	return SCARD_S_SUCCESS;
}
