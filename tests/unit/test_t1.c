/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* T=1 against a card simulated here that follows ISO/IEC 7816-3 clause 11, with fault
 * injection: lost blocks, bad LRC/CRC, wrong sequence numbers, WTX, card-initiated IFS
 * change and ABORT, chaining both ways around IFSC/IFSD, and resynchronisation. Each
 * case ends in the right APDU or the right PC/SC error. Then the bounds of one call: WTX
 * and IFS storms, the deadline, cancel. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "iso7816/iso7816.h"
#include "platform/threads.h"
#include "../serial/t1crc.h"
#include "t1card.h" /* the card model's EDC (t1card_edc), not the engine's */

enum fault { F_NONE, F_DROP, F_BAD_EDC, F_BAD_SEQ, F_WTX, F_IFS, F_ABORT, F_GARBAGE };

struct card {
	bool crc;
	uint8_t ifsd;      /* what the card may send us */
	uint8_t ns, nr;
	uint8_t cmd[70000];
	size_t cmd_len;
	uint8_t resp[70000];
	size_t resp_len, resp_off, chunk;
	bool answering;
	uint8_t last[300];
	size_t last_len;
	enum fault faults[32]; /* one per card block, in order */
	unsigned block;        /* card blocks sent so far */
	unsigned always_bad;   /* corrupt every block */
	size_t answer_len;     /* answer size (data before 90 00); 0: echo the command */
	uint32_t timeouts[64];
	unsigned xfers, resynchs, wtx_seen, aborted;
	uint8_t deferred[300]; /* the block held back behind an S-request of ours */
	size_t deferred_len;
	/* stalling cards */
	unsigned wtx_more;     /* S(WTX) requests again after each WTX response */
	unsigned wtx_sleep_us; /* taken before each of them */
	uint8_t wtx_mult;      /* F_WTX's multiplier (0: 3) */
	unsigned ifs_more;     /* S(IFS) requests again after each IFS response */
	unsigned silent_from;  /* from this transfer on (1: the first), no answer */
	unsigned cancel_at;    /* cancelled() says yes from this many transfers on */
	uint32_t max_timeout;
};

static void nap_us(unsigned us)
{
	struct timespec ts = { (time_t)(us / 1000000), (long)(us % 1000000) * 1000L };
	nanosleep(&ts, NULL);
}

static long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static bool card_cancelled(void *user)
{
	struct card *c = user;
	return c->cancel_at && c->xfers >= c->cancel_at;
}

static void frame(struct card *c, uint8_t pcb, const uint8_t *inf, size_t len, uint8_t *out,
                  size_t *out_len)
{
	out[0] = 0;
	out[1] = pcb;
	out[2] = (uint8_t)len;
	if (len)
		memcpy(out + 3, inf, len);
	size_t n = 3 + len;
	n += t1card_edc(c->crc, out, n, out + n);
	*out_len = n;
}

/* The next piece of the answer as an I-block. */
static void answer_block(struct card *c, uint8_t *out, size_t *out_len)
{
	size_t left = c->resp_len - c->resp_off;
	c->chunk = left > c->ifsd ? c->ifsd : left;
	bool more = c->chunk < left;
	frame(c, (uint8_t)(c->ns << 6 | (more ? 0x20 : 0)), c->resp + c->resp_off, c->chunk, out, out_len);
}

static void build_answer(struct card *c)
{
	if (c->answer_len) {
		for (size_t i = 0; i < c->answer_len; i++)
			c->resp[i] = (uint8_t)(i * 7);
		c->resp_len = c->answer_len;
	} else {
		memcpy(c->resp, c->cmd, c->cmd_len);
		c->resp_len = c->cmd_len;
	}
	c->resp[c->resp_len++] = 0x90;
	c->resp[c->resp_len++] = 0x00;
	c->resp_off = 0;
	c->answering = true;
}

static LONG card_xfer(void *user, const uint8_t *blk, size_t n, uint8_t *rx, size_t *rx_len,
                      uint32_t timeout_ms)
{
	struct card *c = user;
	uint8_t out[300];
	size_t out_len = 0;
	if (c->xfers < 64)
		c->timeouts[c->xfers] = timeout_ms;
	c->xfers++;
	if (timeout_ms > c->max_timeout)
		c->max_timeout = timeout_ms;
	if (c->silent_from && c->xfers >= c->silent_from) {
		nap_us((timeout_ms < 3000 ? timeout_ms : 3000) * 1000u);
		return SCARD_E_TIMEOUT;
	}

	uint8_t edc[2];
	size_t el = c->crc ? 2 : 1;
	bool bad = n < 3 + el || n != 3 + (size_t)blk[2] + el ||
	           (t1card_edc(c->crc, blk, n - el, edc), memcmp(edc, blk + n - el, el) != 0);
	uint8_t pcb = n >= 2 ? blk[1] : 0;
	if (bad) {
		frame(c, (uint8_t)(0x80 | c->nr << 4 | 1), NULL, 0, out, &out_len);
	} else if ((pcb & 0xC0) == 0xC0) {
		uint8_t type = pcb & 0x1F;
		if (pcb & 0x20) {
			/* the host answered our S-request */
			if (type == 0x03)
				c->wtx_seen++;
			if ((type == 0x03 && c->wtx_more) || (type == 0x01 && c->ifs_more)) {
				/* asks again, the answer still held back */
				uint8_t v = type == 0x03 ? 1 : 16;
				if (type == 0x03) {
					c->wtx_more--;
					nap_us(c->wtx_sleep_us);
				} else {
					c->ifs_more--;
				}
				frame(c, (uint8_t)(0xC0 | type), &v, 1, out, &out_len);
				memcpy(rx, out, out_len);
				*rx_len = out_len;
				return SCARD_S_SUCCESS;
			}
			if (type == 0x02) {
				c->aborted++;
				c->cmd_len = 0;
				c->answering = false;
				return SCARD_E_TIMEOUT; /* nothing more after an abort */
			}
			memcpy(out, c->deferred, c->deferred_len);
			out_len = c->deferred_len;
		} else if (type == 0x00) {
			c->resynchs++;
			c->ns = c->nr = 0;
			c->cmd_len = 0;
			c->answering = false;
			frame(c, 0xE0, NULL, 0, out, &out_len);
		} else if (type == 0x01) {
			c->ifsd = blk[3];
			frame(c, 0xE1, blk + 3, 1, out, &out_len);
		} else if (type == 0x02) {
			c->aborted++;
			c->cmd_len = 0;
			c->answering = false;
			frame(c, 0xE2, NULL, 0, out, &out_len);
		} else {
			frame(c, (uint8_t)(0x80 | c->nr << 4 | 2), NULL, 0, out, &out_len);
		}
	} else if ((pcb & 0xC0) == 0x80) {
		uint8_t nr = (pcb >> 4) & 1;
		if (c->answering && nr != c->ns) {
			c->ns ^= 1;
			c->resp_off += c->chunk;
			answer_block(c, out, &out_len);
		} else {
			memcpy(out, c->last, c->last_len);
			out_len = c->last_len;
		}
	} else {
		if (((pcb >> 6) & 1) != c->nr) {
			/* a repeated block: we have it already; acknowledge or answer again */
			memcpy(out, c->last, c->last_len);
			out_len = c->last_len;
		} else {
			c->nr ^= 1;
			memcpy(c->cmd + c->cmd_len, blk + 3, blk[2]);
			c->cmd_len += blk[2];
			if (pcb & 0x20) {
				frame(c, (uint8_t)(0x80 | c->nr << 4), NULL, 0, out, &out_len);
			} else {
				build_answer(c);
				answer_block(c, out, &out_len);
			}
		}
	}

	/* Fault injection on this block. */
	enum fault f = c->block < 32 ? c->faults[c->block] : F_NONE;
	c->block++;
	/* What the card meant to send is what it repeats when asked. */
	memcpy(c->last, out, out_len);
	c->last_len = out_len;
	switch (f) {
	case F_DROP:
		return SCARD_E_TIMEOUT; /* the card's block is lost; its state moved on */
	case F_BAD_EDC:
		out[out_len - 1] ^= 0x5A;
		break;
	case F_BAD_SEQ:
		frame(c, out[1] ^ 0x40, c->last + 3, c->last[2], out, &out_len);
		break;
	case F_WTX:
	case F_IFS: {
		memcpy(c->deferred, out, out_len);
		c->deferred_len = out_len;
		uint8_t v = f == F_WTX ? (c->wtx_mult ? c->wtx_mult : 3) : 16;
		frame(c, f == F_WTX ? 0xC3 : 0xC1, &v, 1, out, &out_len);
		break;
	}
	case F_ABORT:
		frame(c, 0xC2, NULL, 0, out, &out_len);
		break;
	case F_GARBAGE:
		out_len = 2;
		break;
	default:
		break;
	}
	if (c->always_bad) {
		c->always_bad--;
		out[out_len - 1] ^= 1;
	}
	if (out_len > *rx_len)
		return SCARD_E_INSUFFICIENT_BUFFER;
	memcpy(rx, out, out_len);
	*rx_len = out_len;
	return SCARD_S_SUCCESS;
}

static struct card *card_new(void)
{
	struct card *c = calloc(1, sizeof(*c));
	c->ifsd = 32;
	return c;
}

static void t1_for(struct calais__t1 *t, struct card *c, uint8_t ifsc)
{
	memset(t, 0, sizeof(*t));
	calais__t1_init(t, NULL);
	t->user = c;
	t->xfer = card_xfer;
	t->bwt_ms = 100;
	t->ifsc = ifsc;
	t->crc = c->crc;
}

static void roundtrip_tag(struct card *c, uint8_t ifsc, size_t cmd_len, const char *tag);
static void roundtrip(struct card *c, uint8_t ifsc, size_t cmd_len)
{
	roundtrip_tag(c, ifsc, cmd_len, "");
}

static void roundtrip_tag(struct card *c, uint8_t ifsc, size_t cmd_len, const char *tag)
{
	static uint8_t cmd[70000], resp[70000];
	for (size_t i = 0; i < cmd_len; i++)
		cmd[i] = (uint8_t)(i * 13 + 1);
	struct calais__t1 t;
	t1_for(&t, c, ifsc);
	size_t len = sizeof(resp);
	LONG rv = calais__t1_transceive(&t, cmd, cmd_len, resp, &len);
	cr_assert_eq(rv, SCARD_S_SUCCESS, "%srv 0x%08lX (%s) for %zu bytes after %u blocks", tag,
	             (unsigned long)rv, pcsc_stringify_error(rv), cmd_len, c->block);
	size_t want = (c->answer_len ? c->answer_len : cmd_len) + 2;
	cr_assert_eq(len, want, "answer of %zu bytes, want %zu", len, want);
	if (!c->answer_len)
		cr_assert_arr_eq(resp, cmd, cmd_len);
	cr_assert_eq(resp[len - 2], 0x90);
}

/* The CRC epilogue against a GemPC Twin's trace (S(IFS) request and response, R-block,
 * S(RESYNCH) request): the engine's, the serial peers' and the card models'. */
Test(t1, crc_vectors_from_a_real_trace)
{
	static const struct {
		uint8_t b[4];
		size_t n;
		uint8_t crc[2];
	} v[] = {
		{ { 0x00, 0xC1, 0x01, 0xFE }, 4, { 0x54, 0x4E } },
		{ { 0x00, 0xE1, 0x01, 0xFE }, 4, { 0x57, 0x75 } },
		{ { 0x00, 0x80, 0x00 }, 3, { 0xB5, 0xFF } },
		{ { 0x00, 0xC0, 0x00 }, 3, { 0xF3, 0x99 } },
	};
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		uint8_t out[2] = { 0 };
		cr_assert_eq(calais__t1_edc(true, v[i].b, v[i].n, out), 2);
		cr_assert(out[0] == v[i].crc[0] && out[1] == v[i].crc[1],
		          "vector %zu: engine %02X %02X, want %02X %02X", i, out[0], out[1],
		          v[i].crc[0], v[i].crc[1]);
		uint16_t peer = t1crc(v[i].b, v[i].n);
		cr_assert_eq(peer, (uint16_t)(v[i].crc[0] << 8 | v[i].crc[1]), "vector %zu: peer %04X",
		             i, peer);
		cr_assert_eq(t1card_edc(true, v[i].b, v[i].n, out), 2);
		cr_assert(out[0] == v[i].crc[0] && out[1] == v[i].crc[1], "vector %zu: t1card", i);
	}
}

Test(t1, short_exchange_lrc_and_crc)
{
	for (int crc = 0; crc < 2; crc++) {
		struct card *c = card_new();
		c->crc = crc;
		roundtrip(c, 32, 5);
		cr_assert_eq(c->xfers, 1);
		free(c);
	}
}

Test(t1, chaining_around_ifsc_and_ifsd)
{
	static const size_t sizes[] = { 1, 31, 32, 33, 63, 64, 65, 254, 255, 300, 1000 };
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		struct card *c = card_new();
		roundtrip(c, 32, sizes[i]); /* command chained by IFSC, answer by IFSD */
		free(c);
		c = card_new();
		c->answer_len = sizes[i];
		roundtrip(c, 254, 4);
		free(c);
	}
}

Test(t1, extended_apdu_in_chained_blocks)
{
	struct card *c = card_new();
	c->ifsd = 254;
	roundtrip(c, 254, 65544); /* 65536 data bytes + header and lengths */
	free(c);
}

Test(t1, ifsd_request)
{
	struct card *c = card_new();
	struct calais__t1 t;
	t1_for(&t, c, 32);
	cr_assert_eq(calais__t1_set_ifsd(&t, 254), SCARD_S_SUCCESS);
	cr_assert_eq(c->ifsd, 254);
	cr_assert_eq(t.ifsd, 254);
	free(c);
}

Test(t1, lost_and_corrupted_blocks_are_recovered)
{
	enum fault plans[][4] = {
		{ F_DROP }, { F_BAD_EDC }, { F_BAD_SEQ }, { F_GARBAGE },
		{ F_NONE, F_DROP }, { F_NONE, F_BAD_EDC, F_BAD_EDC }, { F_DROP, F_DROP, F_DROP },
	};
	for (size_t p = 0; p < sizeof(plans) / sizeof(plans[0]); p++) {
		for (int crc = 0; crc < 2; crc++) {
			struct card *c = card_new();
			c->crc = crc;
			memcpy(c->faults, plans[p], sizeof(plans[p]));
			char tag[32];
			snprintf(tag, sizeof(tag), "plan %zu crc %d: ", p, crc);
			roundtrip_tag(c, 32, 70, tag); /* a chained command: faults hit acks and answers */
			free(c);
		}
	}
}

Test(t1, wtx_extends_the_wait)
{
	struct card *c = card_new();
	c->faults[0] = F_WTX;
	roundtrip(c, 32, 5);
	cr_assert_eq(c->wtx_seen, 1);
	/* The block after the WTX response is waited for 3 x BWT. */
	cr_assert_eq(c->timeouts[1], 300);
	free(c);
}

Test(t1, card_changes_ifsc)
{
	struct card *c = card_new();
	c->faults[0] = F_IFS; /* on the ack of our first chained block */
	struct calais__t1 t;
	t1_for(&t, c, 32);
	static uint8_t cmd[100], resp[200];
	size_t len = sizeof(resp);
	cr_assert_eq(calais__t1_transceive(&t, cmd, sizeof(cmd), resp, &len), SCARD_S_SUCCESS);
	cr_assert_eq(t.ifsc, 16);
	cr_assert_eq(len, sizeof(cmd) + 2);
	free(c);
}

Test(t1, card_abort_fails_cleanly)
{
	struct card *c = card_new();
	c->faults[0] = F_ABORT;
	struct calais__t1 t;
	t1_for(&t, c, 32);
	static uint8_t cmd[100], resp[200];
	size_t len = sizeof(resp);
	cr_assert_eq(calais__t1_transceive(&t, cmd, sizeof(cmd), resp, &len), SCARD_F_COMM_ERROR);
	cr_assert_eq(c->aborted, 1);
	free(c);
}

Test(t1, persistent_errors_resynchronise_then_fail)
{
	struct card *c = card_new();
	c->always_bad = 4; /* the answer and three retransmissions are corrupted */
	struct calais__t1 t;
	t1_for(&t, c, 32);
	static uint8_t cmd[5], resp[64];
	size_t len = sizeof(resp);
	cr_assert_eq(calais__t1_transceive(&t, cmd, sizeof(cmd), resp, &len), SCARD_F_COMM_ERROR);
	cr_assert_eq(c->resynchs, 1);
	cr_assert_eq(t.ns, 0);
	cr_assert_eq(t.nr, 0);
	/* After the resynchronisation the link works again. */
	len = sizeof(resp);
	cr_assert_eq(calais__t1_transceive(&t, cmd, sizeof(cmd), resp, &len), SCARD_S_SUCCESS);
	/* A card that answers nothing at all, not even to RESYNCH. */
	c->always_bad = 1000;
	len = sizeof(resp);
	cr_assert_eq(calais__t1_transceive(&t, cmd, sizeof(cmd), resp, &len), SCARD_W_UNRESPONSIVE_CARD);
	free(c);
}

Test(t1, answer_larger_than_the_buffer)
{
	struct card *c = card_new();
	c->answer_len = 100;
	struct calais__t1 t;
	t1_for(&t, c, 32);
	uint8_t cmd[4] = { 0 }, resp[50];
	size_t len = sizeof(resp);
	cr_assert_eq(calais__t1_transceive(&t, cmd, sizeof(cmd), resp, &len), SCARD_E_INSUFFICIENT_BUFFER);
	free(c);
}

Test(t1, host_abort)
{
	struct card *c = card_new();
	struct calais__t1 t;
	t1_for(&t, c, 32);
	cr_assert_eq(calais__t1_abort(&t), SCARD_S_SUCCESS);
	cr_assert_eq(c->aborted, 1);
	free(c);
}

/* The same card behind a byte link: what it answers is queued byte by byte, and a
 * "short" fault leaves a block's tail out so the character wait times out. */
struct link {
	struct card *card;
	uint8_t q[400];
	size_t head, tail;
	unsigned short_blocks; /* drop the last byte of the next N answers */
	uint32_t last_timeout;
};

static LONG l_send(void *user, const uint8_t *b, size_t n)
{
	struct link *l = user;
	uint8_t rx[300];
	size_t rl = sizeof(rx);
	l->head = l->tail = 0;
	LONG rv = card_xfer(l->card, b, n, rx, &rl, 0);
	if (rv != SCARD_S_SUCCESS)
		return SCARD_S_SUCCESS; /* the card keeps silent */
	if (l->short_blocks) {
		l->short_blocks--;
		rl--;
	}
	memcpy(l->q, rx, rl);
	l->tail = rl;
	return SCARD_S_SUCCESS;
}

static LONG l_recv(void *user, uint8_t *b, size_t n, uint32_t timeout_ms)
{
	struct link *l = user;
	l->last_timeout = timeout_ms;
	if (l->tail - l->head < n)
		return SCARD_E_TIMEOUT;
	memcpy(b, l->q + l->head, n);
	l->head += n;
	return SCARD_S_SUCCESS;
}

Test(t1, byte_link_with_cwt)
{
	struct link l = { .card = card_new(), .short_blocks = 1 };
	struct calais__t1 t;
	t1_for(&t, l.card, 32);
	t.xfer = NULL;
	t.send = l_send;
	t.recv = l_recv;
	t.user = &l;
	t.cwt_ms = 7;
	static uint8_t cmd[100], resp[200];
	for (size_t i = 0; i < sizeof(cmd); i++)
		cmd[i] = (uint8_t)i;
	size_t len = sizeof(resp);
	/* The first ack arrives without its LRC: CWT runs out, an R-block recovers. */
	cr_assert_eq(calais__t1_transceive(&t, cmd, sizeof(cmd), resp, &len), SCARD_S_SUCCESS);
	cr_assert_eq(len, sizeof(cmd) + 2);
	cr_assert_arr_eq(resp, cmd, sizeof(cmd));
	cr_assert_eq(l.last_timeout, 7, "characters are waited for CWT");
	free(l.card);
}

/* ---- bounds of one call ---------------------------------------------------------------- */

/* A card that asks for WTX again as soon as it is granted: ends quickly, not by the
 * exchange limit (without the cap it never ended). */
Test(t1, wtx_storm_ends_quickly, .timeout = 10)
{
	struct card *c = card_new();
	c->faults[0] = F_WTX;
	c->wtx_more = 1000000;
	struct calais__t1 t;
	t1_for(&t, c, 32);
	t.bwt_ms = 1000; /* "at once": within 100 ms */
	t.name = "test reader";
	static uint8_t cmd[5], resp[32];
	size_t len = sizeof(resp);
	long t0 = now_ms();
	cr_assert_eq(calais__t1_transceive(&t, cmd, sizeof(cmd), resp, &len), SCARD_F_COMM_ERROR);
	cr_assert_lt(now_ms() - t0, 500, "ended after %ld ms", now_ms() - t0);
	cr_assert_eq(c->wtx_seen, CALAIS__T1_MAX_WTX_QUICK);
	free(c);
}

/* A slow card (a key generation) asking for WTX once per BWT, for many BWTs, is served. */
Test(t1, slow_card_asking_wtx_every_bwt_is_served, .timeout = 20)
{
	struct card *c = card_new();
	c->faults[0] = F_WTX;
	c->wtx_more = 100;
	c->wtx_sleep_us = 6000; /* BWT is 10 ms: past a tenth of it */
	struct calais__t1 t;
	t1_for(&t, c, 32);
	t.bwt_ms = 10;
	static uint8_t cmd[5], resp[32];
	size_t len = sizeof(resp);
	cr_assert_eq(calais__t1_transceive(&t, cmd, sizeof(cmd), resp, &len), SCARD_S_SUCCESS);
	cr_assert_eq(c->wtx_seen, 101);
	cr_assert_eq(len, sizeof(cmd) + 2);
	free(c);
}

/* WTX requests that each come late enough still have a total cap. */
Test(t1, wtx_requests_have_a_total_cap, .timeout = 30)
{
	struct card *c = card_new();
	c->faults[0] = F_WTX;
	c->wtx_more = 1000000;
	c->wtx_sleep_us = 200; /* BWT is 1 ms: never "at once" */
	struct calais__t1 t;
	t1_for(&t, c, 32);
	t.bwt_ms = 1;
	static uint8_t cmd[5], resp[32];
	size_t len = sizeof(resp);
	cr_assert_eq(calais__t1_transceive(&t, cmd, sizeof(cmd), resp, &len), SCARD_F_COMM_ERROR);
	cr_assert_eq(c->wtx_seen, CALAIS__T1_MAX_WTX);
	free(c);
}

Test(t1, ifs_storm_ends, .timeout = 10)
{
	struct card *c = card_new();
	c->faults[0] = F_IFS;
	c->ifs_more = 1000000;
	struct calais__t1 t;
	t1_for(&t, c, 32);
	static uint8_t cmd[100], resp[200];
	size_t len = sizeof(resp);
	cr_assert_eq(calais__t1_transceive(&t, cmd, sizeof(cmd), resp, &len), SCARD_F_COMM_ERROR);
	cr_assert_eq(c->xfers, 1 + CALAIS__T1_MAX_IFS);
	free(c);
}

/* A silent card with a long BWT: retries and RESYNCH would take 7 x BWT; every wait is
 * cut to the deadline, and the call ends there with SCARD_E_TIMEOUT. */
Test(t1, a_silent_card_ends_at_the_deadline, .timeout = 10)
{
	struct card *c = card_new();
	c->silent_from = 1;
	struct calais__t1 t;
	t1_for(&t, c, 32);
	t.bwt_ms = 10000;
	t.deadline_ms = calais__now_ms() + 200;
	static uint8_t cmd[5], resp[32];
	size_t len = sizeof(resp);
	long t0 = now_ms();
	cr_assert_eq(calais__t1_transceive(&t, cmd, sizeof(cmd), resp, &len), SCARD_E_TIMEOUT);
	cr_assert_lt(now_ms() - t0, 1000, "ended after %ld ms", now_ms() - t0);
	cr_assert_leq(c->max_timeout, 200);
	free(c);
}

/* S(WTX 255) on a long BWT asks for 255 x BWT; the wait is what is left of the call. */
Test(t1, a_large_wtx_is_cut_to_the_deadline, .timeout = 10)
{
	struct card *c = card_new();
	c->faults[0] = F_WTX;
	c->wtx_mult = 255;
	c->silent_from = 2; /* nothing after the WTX response */
	struct calais__t1 t;
	t1_for(&t, c, 32);
	t.bwt_ms = 1000;
	t.deadline_ms = calais__now_ms() + 300;
	static uint8_t cmd[5], resp[32];
	size_t len = sizeof(resp);
	long t0 = now_ms();
	cr_assert_eq(calais__t1_transceive(&t, cmd, sizeof(cmd), resp, &len), SCARD_E_TIMEOUT);
	cr_assert_lt(now_ms() - t0, 1000, "ended after %ld ms", now_ms() - t0);
	cr_assert_leq(c->max_timeout, 300);
	free(c);
}

Test(t1, cancel_is_seen_between_blocks, .timeout = 10)
{
	struct card *c = card_new();
	c->silent_from = 1;
	c->cancel_at = 2;
	struct calais__t1 t;
	t1_for(&t, c, 32);
	t.bwt_ms = 50;
	t.cancelled = card_cancelled;
	static uint8_t cmd[5], resp[32];
	size_t len = sizeof(resp);
	cr_assert_eq(calais__t1_transceive(&t, cmd, sizeof(cmd), resp, &len), SCARD_E_CANCELLED);
	cr_assert_eq(c->xfers, 2);
	free(c);
}

/* ---- parameters from a partly parsed ATR ------------------------------------------------ */

/* TC3 = CRC, then TA4 = FF (the first TA for T=1): the ATR is rejected (IFSC FF is reserved) but a transport may
 * still run the card. No block longer than 3 + 254 + 2 bytes is ever built (an INF of
 * 255 bytes plus a CRC wrote one byte past the block buffer). */
Test(t1, ifsc_ff_from_a_rejected_atr_is_bounded)
{
	static const uint8_t atr[] = { 0x3B, 0x80, 0x81, 0xC1, 0x01, 0x11, 0xFF, 0x2F };
	struct calais__atr a;
	cr_assert_neq(calais__atr_parse(atr, sizeof(atr), &a), SCARD_S_SUCCESS);
	struct card *c = card_new();
	c->crc = true;
	c->ifsd = 254;
	struct calais__t1 t;
	memset(&t, 0, sizeof(t));
	calais__t1_init(&t, &a);
	t.user = c;
	t.xfer = card_xfer;
	t.bwt_ms = 100;
	cr_assert(t.crc, "TC3 bit 0 asks for a CRC");
	static uint8_t cmd[600], resp[700];
	size_t len = sizeof(resp);
	cr_assert_eq(calais__t1_transceive(&t, cmd, sizeof(cmd), resp, &len), SCARD_S_SUCCESS);
	cr_assert_eq(len, sizeof(cmd) + 2);
	cr_assert(t.ifsc >= 1 && t.ifsc <= 254, "IFSC %u", t.ifsc);
	free(c);
}
