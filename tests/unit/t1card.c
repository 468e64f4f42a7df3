/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* t1card: a T=1 card from the receiver rules of ISO/IEC 7816-3:2006 11.6 (see t1card.h).
 * Written from the standard's text, not from the engine: each received block is judged
 * as the card must judge it, and answered as the rules say:
 *   - an invalid block (EDC, LEN, NAD, INF over IFSC, a request only the card may
 *     make): R(N(R)) with 1 (EDC) or 2 (other error); after an S-request of the card's,
 *     that request again;
 *   - an I-block with the expected N(S): taken (its N(S) acknowledges the card's last
 *     I-block); chained: R(N(R)) for the next; the last: the answer, chained by IFSD;
 *     an I-block with the previous N(S): the host missed the card's answer: sent again;
 *   - an R-block whose N(R) is the N(S) of the card's next I-block acknowledges a chained
 *     I-block: the next piece; one naming the card's last I-block: that block again;
 *     with nothing of the card's pending: the card's last block again;
 *   - S(RESYNCH), S(IFS), S(ABORT) requests: answered, with their effect; S(WTX) and
 *     S(IFS) responses to the card's own requests: the held block follows. */
#include "t1card.h"

#include <string.h>

#define R_BLOCK 0x80
#define S_BLOCK 0xC0

/* The CRC by its definition: the block's bits in line order (each byte least significant
 * bit first) are the coefficients of a polynomial, taken highest first, divided by
 * x^16 + x^12 + x^5 + 1 with the register preset to ones; the remainder, read back in
 * line order (bit-reversed), is the EDC, high byte first. */
static uint16_t crc_by_division(const uint8_t *b, size_t n)
{
	uint32_t rem = 0xFFFF;
	for (size_t i = 0; i < n; i++) {
		for (unsigned k = 0; k < 8; k++) {
			uint32_t in = (b[i] >> k) & 1u;
			uint32_t top = (rem >> 15) & 1u;
			rem = (rem << 1) & 0xFFFFu;
			if (top ^ in)
				rem ^= 0x1021u;
		}
	}
	uint16_t out = 0;
	for (unsigned k = 0; k < 16; k++)
		if (rem & (1u << k))
			out |= (uint16_t)(1u << (15 - k));
	return out;
}

size_t t1card_edc(bool crc, const uint8_t *b, size_t n, uint8_t out[2])
{
	if (crc) {
		uint16_t v = crc_by_division(b, n);
		out[0] = (uint8_t)(v >> 8);
		out[1] = (uint8_t)(v & 0xFF);
		return 2;
	}
	uint8_t lrc = 0;
	for (size_t i = 0; i < n; i++)
		lrc = (uint8_t)(lrc ^ b[i]);
	out[0] = lrc;
	return 1;
}

void t1card_init(struct t1card *c)
{
	memset(c, 0, sizeof(*c));
	c->ifsc = 32;
	c->ifsd = 32;
}

unsigned t1card_seen(const struct t1card *c, uint8_t mask, uint8_t value)
{
	unsigned n = 0;
	for (unsigned i = 0; i < c->n_seen && i < T1CARD_LOG; i++)
		if ((c->seen_pcb[i] & mask) == value)
			n++;
	return n;
}

static size_t block(const struct t1card *c, uint8_t pcb, const uint8_t *inf, size_t len,
                    uint8_t *out)
{
	out[0] = 0x00;
	out[1] = pcb;
	out[2] = (uint8_t)len;
	if (len)
		memcpy(out + 3, inf, len);
	return 3 + len + t1card_edc(c->crc, out, 3 + len, out + 3 + len);
}

static size_t r_block(const struct t1card *c, uint8_t code, uint8_t *out)
{
	return block(c, (uint8_t)(R_BLOCK | c->nr << 4 | code), NULL, 0, out);
}

/* The card's next I-block of its answer. */
static size_t next_piece(struct t1card *c, uint8_t *out)
{
	if (c->empty_left) {
		c->empty_left--;
		c->tx_chunk = 0;
		c->tx_pending = true;
		size_t n = block(c, (uint8_t)(c->ns << 6 | 0x20), NULL, 0, out);
		c->ns ^= 1;
		memcpy(c->last_i, out, n);
		c->last_i_len = n;
		return n;
	}
	size_t left = c->tx_len - c->tx_off;
	c->tx_chunk = left > c->ifsd ? c->ifsd : left;
	bool more = c->tx_chunk < left;
	c->tx_pending = true;
	size_t n = block(c, (uint8_t)(c->ns << 6 | (more ? 0x20 : 0)), c->tx + c->tx_off,
	                 c->tx_chunk, out);
	c->ns ^= 1;
	memcpy(c->last_i, out, n);
	c->last_i_len = n;
	return n;
}

static void answer(struct t1card *c)
{
	c->apdus++;
	if (c->answer_len) {
		for (size_t i = 0; i < c->answer_len; i++)
			c->tx[i] = (uint8_t)(i * 3 + 1);
		c->tx_len = c->answer_len;
	} else {
		memcpy(c->tx, c->rx, c->rx_len);
		c->tx_len = c->rx_len;
	}
	c->tx[c->tx_len++] = 0x90;
	c->tx[c->tx_len++] = 0x00;
	c->tx_off = 0;
	c->rx_len = 0;
}

/* The card's answer to one valid or invalid block from the host; 0: none. */
static size_t judge(struct t1card *c, const uint8_t *b, size_t n, uint8_t *out)
{
	size_t el = c->crc ? 2 : 1;
	uint8_t want[2];
	bool last_was_request = c->last_len && (c->last[1] & 0xE0) == S_BLOCK;
	if (n < 3 + el || b[2] == 0xFF || n != 3 + (size_t)b[2] + el || b[0] != 0x00)
		return last_was_request ? (memcpy(out, c->last, c->last_len), c->last_len)
		                        : r_block(c, 2, out);
	t1card_edc(c->crc, b, n - el, want);
	if (memcmp(want, b + n - el, el) != 0) {
		c->edc_errors++;
		return last_was_request ? (memcpy(out, c->last, c->last_len), c->last_len)
		                        : r_block(c, 1, out);
	}
	uint8_t pcb = b[1], len = b[2];
	if (!(pcb & 0x80)) { /* I-block */
		uint8_t their_ns = (pcb >> 6) & 1;
		if (len > c->ifsc)
			return r_block(c, 2, out);
		if (their_ns != c->nr) {
			/* The host sends again what the card has: the card's reply was lost. */
			memcpy(out, c->last, c->last_len);
			return c->last_len;
		}
		if (c->tx_pending) {
			/* A new I-block acknowledges the card's last one: it must have ended
			 * the card's chain. */
			if (c->tx_off + c->tx_chunk < c->tx_len || c->empty_left)
				return r_block(c, 2, out);
			c->tx_pending = false;
		}
		c->nr ^= 1;
		if (c->rx_len + len <= sizeof(c->rx)) {
			memcpy(c->rx + c->rx_len, b + 3, len);
			c->rx_len += len;
		}
		if (len > c->max_inf)
			c->max_inf = len;
		if (pcb & 0x20)
			return r_block(c, 0, out);
		answer(c);
		return next_piece(c, out);
	}
	if ((pcb & 0xC0) == R_BLOCK) {
		uint8_t their_nr = (pcb >> 4) & 1;
		if (len != 0)
			return r_block(c, 2, out);
		if (c->tx_pending) {
			bool chained = c->tx_off + c->tx_chunk < c->tx_len || c->empty_left;
			if (their_nr == c->ns && chained) {
				c->tx_off += c->tx_chunk; /* acknowledged: the next piece */
				return next_piece(c, out);
			}
			if (their_nr != c->ns) {
				/* names the card's last I-block: it goes again, as it was */
				memcpy(out, c->last_i, c->last_i_len);
				return c->last_i_len;
			}
			return r_block(c, 2, out);
		}
		if (!c->last_len)
			return r_block(c, 0, out);
		memcpy(out, c->last, c->last_len);
		return c->last_len;
	}
	switch (pcb) {
	case S_BLOCK | 0x00: /* RESYNCH request */
		c->resynchs++;
		c->ns = c->nr = 0;
		c->rx_len = c->tx_len = c->tx_off = 0;
		c->tx_pending = c->wtx_pending = false;
		c->empty_left = 0;
		return block(c, 0xE0, NULL, 0, out);
	case S_BLOCK | 0x01: /* IFS request */
		if (len != 1 || b[3] == 0 || b[3] == 0xFF)
			return r_block(c, 2, out);
		c->ifsd = b[3];
		return block(c, 0xE1, b + 3, 1, out);
	case S_BLOCK | 0x02: /* ABORT request */
		c->aborts++;
		c->rx_len = c->tx_len = c->tx_off = 0;
		c->tx_pending = false;
		c->empty_left = 0;
		return block(c, 0xE2, NULL, 0, out);
	case S_BLOCK | 0x23: /* WTX response */
	case S_BLOCK | 0x21: /* IFS response */
		if (!c->held_len || !last_was_request || (c->last[1] | 0x20) != pcb ||
		    len != c->last[2] || (len && b[3] != c->last[3]))
			return r_block(c, 2, out);
		if (pcb == (S_BLOCK | 0x23))
			c->wtx_answer = b[3];
		memcpy(out, c->held, c->held_len);
		n = c->held_len;
		c->held_len = 0;
		return n;
	case S_BLOCK | 0x22: /* ABORT response: the card's chain is given up; it waits */
		if (!last_was_request || c->last[1] != (S_BLOCK | 0x02))
			return r_block(c, 2, out);
		c->rx_len = 0;
		return 0;
	default:
		return r_block(c, 2, out); /* WTX request or a response to nothing */
	}
}

LONG t1card_xfer(void *user, const uint8_t *blk, size_t n, uint8_t *rx, size_t *rx_len,
                 uint32_t timeout_ms)
{
	struct t1card *c = user;
	(void)timeout_ms;
	uint8_t in[3 + 255 + 2], out[3 + 254 + 2];
	if (n > sizeof(in))
		return SCARD_F_INTERNAL_ERROR;
	memcpy(in, blk, n);
	enum t1card_fault f = c->n_to_card < 32 ? c->to_card[c->n_to_card] : T1F_NONE;
	c->n_to_card++;
	if (f == T1F_LOST || c->mute)
		return SCARD_E_TIMEOUT;
	if (f == T1F_EDC)
		in[n - 1] ^= 0x01;
	if (f == T1F_SEQ && n >= 4 && !(in[1] & 0x80)) {
		/* an I-block out of sequence: N(S) flipped, with a valid EDC */
		in[1] ^= 0x40;
		t1card_edc(c->crc, in, n - (c->crc ? 2 : 1), in + n - (c->crc ? 2 : 1));
	}
	if (c->n_seen < T1CARD_LOG) {
		c->seen_pcb[c->n_seen] = n > 1 ? in[1] : 0;
		c->seen_len[c->n_seen] = n > 2 ? in[2] : 0;
	}
	c->n_seen++;
	uint8_t nr_before = c->nr;
	size_t len = judge(c, in, n, out);
	if (len == 0)
		return SCARD_E_TIMEOUT; /* the card says nothing */
	/* What the card meant to send: what it repeats when asked. */
	memcpy(c->last, out, len);
	c->last_len = len;
	f = c->n_to_host < 32 ? c->to_host[c->n_to_host] : T1F_NONE;
	c->n_to_host++;
	switch (f) {
	case T1F_LOST:
		return SCARD_E_TIMEOUT;
	case T1F_EDC:
		out[len - 1] ^= 0x80;
		break;
	case T1F_SEQ:
		if (!(out[1] & 0x80))
			len = block(c, out[1] ^ 0x40, out + 3, out[2], out);
		break;
	case T1F_WTX:
	case T1F_IFS: {
		memcpy(c->held, out, len);
		c->held_len = len;
		uint8_t v = f == T1F_WTX ? 2 : 16;
		len = block(c, f == T1F_WTX ? 0xC3 : 0xC1, &v, 1, out);
		if (f == T1F_IFS)
			c->ifsc = 16;
		memcpy(c->last, out, len);
		c->last_len = len;
		break;
	}
	case T1F_ABORT:
		/* The card gives up the chain instead of acknowledging the block: it has
		 * not taken it. */
		c->nr = nr_before;
		c->rx_len = 0;
		len = block(c, 0xC2, NULL, 0, out);
		memcpy(c->last, out, len);
		c->last_len = len;
		break;
	default:
		break;
	}
	if (len > *rx_len)
		return SCARD_E_INSUFFICIENT_BUFFER;
	memcpy(rx, out, len);
	*rx_len = len;
	return SCARD_S_SUCCESS;
}
