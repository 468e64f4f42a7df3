/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* T=0: APDU cases 1 to 4 mapped to TPDUs, procedure bytes (ACK, byte by byte, NULL,
 * SW), GET RESPONSE chains on 61xx, re-sending on 6Cxx, ENVELOPE, and the errors of a
 * card that misbehaves, against a character-level card simulated here; and the bounds of
 * an exchange (its deadline, cancel) against cards that stall it. */
#include <criterion/criterion.h>
#include <string.h>
#include <time.h>

#include "iso7816/iso7816.h"
#include "platform/threads.h"

/* The simulated card's behaviour for the next commands. */
struct card {
	uint8_t in[600];
	size_t in_len;   /* bytes received for the current TPDU */
	uint8_t out[600];
	size_t out_pos, out_len;
	uint8_t hdr[5];
	bool want_data;  /* ACK sent, waiting for Lc bytes */
	/* scripted behaviour */
	unsigned nulls;       /* NULL bytes before each procedure byte */
	bool byte_by_byte;    /* INS^FF for every byte instead of one ACK */
	bool wrong_le;        /* answer 6C08 unless P3 = 8 */
	unsigned pending;     /* bytes left for GET RESPONSE */
	bool no_envelope;
	bool garbage;         /* answer with a byte that is no procedure byte */
	bool silent;          /* never answer */
	unsigned tpdus;
	uint8_t envelope[1024];
	size_t envelope_len;
	uint8_t seen_p3[16];
	/* stalling cards */
	bool null_forever;    /* every byte read is a NULL, each after recv_sleep_ms */
	unsigned recv_sleep_ms;
	bool sleep_timeout;   /* a silent card's read takes its whole timeout (up to 3 s) */
	uint32_t max_timeout; /* the longest wait asked of the transport */
	unsigned recvs;
	unsigned cancel_after; /* cancelled() says yes from this many reads on (0: never) */
};

static void nap_ms(unsigned ms)
{
	struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

static long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static bool c_cancelled(void *user)
{
	struct card *c = user;
	return c->cancel_after && c->recvs >= c->cancel_after;
}

static void q(struct card *c, uint8_t b)
{
	c->out[c->out_len++] = b;
}

static void proc(struct card *c, uint8_t pb)
{
	for (unsigned i = 0; i < c->nulls; i++)
		q(c, 0x60);
	q(c, pb);
}

static int sw(struct card *c, uint16_t w)
{
	proc(c, (uint8_t)(w >> 8));
	q(c, (uint8_t)w);
	return 0;
}

/* Sends `n` data bytes 0, 1, 2... with the scripted procedure bytes, then SW. */
static int give(struct card *c, size_t n, uint16_t w)
{
	if (n) {
		if (c->byte_by_byte) {
			for (size_t i = 0; i < n; i++) {
				proc(c, c->hdr[1] ^ 0xFF);
				q(c, (uint8_t)i);
			}
		} else {
			proc(c, c->hdr[1]);
			for (size_t i = 0; i < n; i++)
				q(c, (uint8_t)i);
		}
	}
	return sw(c, w);
}

/* The card has the header (and data, if any): answer. */
static int command(struct card *c, const uint8_t *data, size_t lc)
{
	uint8_t ins = c->hdr[1], p3 = c->hdr[4];
	if (c->tpdus < 16)
		c->seen_p3[c->tpdus] = p3;
	c->tpdus++;
	if (c->silent)
		return 0;
	if (c->garbage) {
		q(c, 0x42);
		return 0;
	}
	switch (ins) {
	case 0xB0: /* READ: case 2 */
		if (c->wrong_le && p3 != 8)
			return sw(c, 0x6C08);
		return give(c, p3 ? p3 : 256, 0x9000);
	case 0xC0: { /* GET RESPONSE */
		size_t n = p3 ? p3 : 256;
		if (n > c->pending)
			return sw(c, (uint16_t)(0x6C00 | c->pending));
		c->pending -= (unsigned)n;
		return give(c, n, c->pending ? (uint16_t)(0x6100 | (c->pending > 255 ? 0 : c->pending)) : 0x9000);
	}
	case 0xC2: /* ENVELOPE */
		if (c->no_envelope)
			return sw(c, 0x6D00);
		memcpy(c->envelope + c->envelope_len, data, lc);
		c->envelope_len += lc;
		return sw(c, 0x9000);
	case 0x2A: /* case 4: data in, answer waits behind 61xx */
		c->pending = 300;
		return sw(c, 0x6100);
	default: /* case 1 and 3 */
		return sw(c, 0x9000);
	}
}

static LONG c_send(void *user, const uint8_t *b, size_t n)
{
	struct card *c = user;
	for (size_t i = 0; i < n; i++) {
		if (c->want_data) {
			c->in[c->in_len++] = b[i];
			/* byte-by-byte outgoing: ask for the next one */
			if (c->in_len < c->hdr[4] && c->byte_by_byte)
				proc(c, c->hdr[1] ^ 0xFF);
			if (c->in_len == c->hdr[4]) {
				c->want_data = false;
				c->in_len = 0;
				command(c, c->in, c->hdr[4]);
			}
			continue;
		}
		c->hdr[c->in_len++] = b[i];
		if (c->in_len == 5) {
			c->in_len = 0;
			uint8_t ins = c->hdr[1];
			bool outgoing = ins == 0xD6 || ins == 0x2A || ins == 0xC2;
			if (outgoing && c->hdr[4]) {
				c->want_data = true;
				proc(c, c->byte_by_byte ? ins ^ 0xFF : ins);
			} else {
				command(c, NULL, 0);
			}
		}
	}
	return SCARD_S_SUCCESS;
}

static LONG c_recv(void *user, uint8_t *b, size_t n, uint32_t timeout_ms)
{
	struct card *c = user;
	c->recvs++;
	if (timeout_ms > c->max_timeout)
		c->max_timeout = timeout_ms;
	if (c->null_forever) {
		nap_ms(c->recv_sleep_ms);
		memset(b, 0x60, n);
		return SCARD_S_SUCCESS;
	}
	if (c->out_len - c->out_pos < n) {
		if (c->sleep_timeout)
			nap_ms(timeout_ms < 3000 ? timeout_ms : 3000);
		return SCARD_E_TIMEOUT;
	}
	memcpy(b, c->out + c->out_pos, n);
	c->out_pos += n;
	if (c->out_pos == c->out_len)
		c->out_pos = c->out_len = 0;
	return SCARD_S_SUCCESS;
}

static struct calais__t0_io io_for(struct card *c)
{
	struct calais__t0_io io = { .user = c, .send = c_send, .recv = c_recv, .wt_ms = 100,
		                    .max_nulls = 50, .auto_get_response = true };
	return io;
}

static LONG run(struct card *c, const uint8_t *apdu, size_t n, uint8_t *resp, size_t *len)
{
	struct calais__t0_io io = io_for(c);
	return calais__t0_transceive(&io, apdu, n, resp, len);
}

Test(t0, case1_and_case3)
{
	struct card c = { 0 };
	uint8_t resp[300];
	size_t len = sizeof(resp);
	const uint8_t case1[] = { 0x00, 0x44, 0x00, 0x00 };
	cr_assert_eq(run(&c, case1, 4, resp, &len), SCARD_S_SUCCESS);
	cr_assert_eq(len, 2);
	cr_assert_eq(c.seen_p3[0], 0, "case 1 goes out with P3 = 00");
	const uint8_t case3[] = { 0x00, 0xD6, 0x00, 0x00, 0x03, 1, 2, 3 };
	len = sizeof(resp);
	cr_assert_eq(run(&c, case3, sizeof(case3), resp, &len), SCARD_S_SUCCESS);
	cr_assert_eq(len, 2);
	cr_assert_eq(resp[0], 0x90);
	cr_assert_arr_eq(c.in, case3 + 5, 3);
}

Test(t0, case2_ack_and_byte_by_byte_with_nulls)
{
	const uint8_t read[] = { 0x00, 0xB0, 0x00, 0x00, 0x10 };
	for (int mode = 0; mode < 2; mode++) {
		struct card c = { .byte_by_byte = mode, .nulls = 3 };
		uint8_t resp[300];
		size_t len = sizeof(resp);
		cr_assert_eq(run(&c, read, 5, resp, &len), SCARD_S_SUCCESS);
		cr_assert_eq(len, 18);
		for (int i = 0; i < 16; i++)
			cr_assert_eq(resp[i], i);
		cr_assert_eq(resp[16], 0x90);
	}
	/* Le 00: 256 bytes. */
	struct card c = { 0 };
	uint8_t resp[300];
	size_t len = sizeof(resp);
	const uint8_t read256[] = { 0x00, 0xB0, 0x00, 0x00, 0x00 };
	cr_assert_eq(run(&c, read256, 5, resp, &len), SCARD_S_SUCCESS);
	cr_assert_eq(len, 258);
}

Test(t0, wrong_le_is_sent_again)
{
	struct card c = { .wrong_le = true };
	uint8_t resp[300];
	size_t len = sizeof(resp);
	const uint8_t read[] = { 0x00, 0xB0, 0x00, 0x00, 0x00 };
	cr_assert_eq(run(&c, read, 5, resp, &len), SCARD_S_SUCCESS);
	cr_assert_eq(c.tpdus, 2);
	cr_assert_eq(c.seen_p3[1], 8);
	cr_assert_eq(len, 10);
	/* Turned off (pcsc-lite's behaviour): the caller sees 6C08. */
	struct card d = { .wrong_le = true };
	struct calais__t0_io io = io_for(&d);
	io.auto_get_response = false;
	len = sizeof(resp);
	cr_assert_eq(calais__t0_transceive(&io, read, 5, resp, &len), SCARD_S_SUCCESS);
	cr_assert_eq(len, 2);
	cr_assert_eq(resp[0], 0x6C);
}

Test(t0, case4_get_response_chain)
{
	struct card c = { 0 };
	uint8_t resp[400];
	size_t len = sizeof(resp);
	/* 300 bytes wait behind 61 00, 61 2C: GET RESPONSE 256 then 44. */
	const uint8_t cmd[] = { 0x00, 0x2A, 0x9E, 0x9A, 0x02, 0xAA, 0xBB, 0x00 };
	cr_assert_eq(run(&c, cmd, sizeof(cmd), resp, &len), SCARD_S_SUCCESS);
	cr_assert_eq(len, 258, "Le 00 caps the answer at 256 bytes, got %zu (tpdus %u, SW %02X%02X)", len, c.tpdus, resp[len-2], resp[len-1]);
	cr_assert_eq(resp[len - 2], 0x61, "44 bytes still waiting");
	cr_assert_eq(resp[len - 1], 44);
	struct card d = { 0 };
	len = 100;
	cr_assert_eq(run(&d, cmd, sizeof(cmd), resp, &len), SCARD_E_INSUFFICIENT_BUFFER);
}

Test(t0, extended_apdus_through_envelope)
{
	uint8_t cmd[7 + 300];
	memcpy(cmd, (uint8_t[]){ 0x00, 0xD6, 0x00, 0x00, 0x00, 0x01, 0x2C }, 7);
	for (int i = 0; i < 300; i++)
		cmd[7 + i] = (uint8_t)i;
	struct card c = { 0 };
	uint8_t resp[16];
	size_t len = sizeof(resp);
	cr_assert_eq(run(&c, cmd, sizeof(cmd), resp, &len), SCARD_S_SUCCESS);
	cr_assert_eq(c.envelope_len, sizeof(cmd));
	cr_assert_arr_eq(c.envelope, cmd, sizeof(cmd));
	struct card d = { .no_envelope = true };
	len = sizeof(resp);
	cr_assert_eq(run(&d, cmd, sizeof(cmd), resp, &len), SCARD_E_UNSUPPORTED_FEATURE);
}

Test(t0, misbehaving_cards)
{
	const uint8_t read[] = { 0x00, 0xB0, 0x00, 0x00, 0x04 };
	uint8_t resp[300];
	size_t len = sizeof(resp);
	struct card nulls = { .nulls = 60 };
	cr_assert_eq(run(&nulls, read, 5, resp, &len), SCARD_W_UNRESPONSIVE_CARD);
	struct card garbage = { .garbage = true };
	len = sizeof(resp);
	cr_assert_eq(run(&garbage, read, 5, resp, &len), SCARD_F_COMM_ERROR);
	struct card silent = { .silent = true };
	len = sizeof(resp);
	cr_assert_eq(run(&silent, read, 5, resp, &len), SCARD_W_UNRESPONSIVE_CARD);
	/* Malformed APDUs never reach the card. */
	struct card c = { 0 };
	struct calais__t0_io io = io_for(&c);
	len = sizeof(resp);
	const uint8_t odd[] = { 0x00, 0x01, 0x02 };
	cr_assert_eq(calais__t0_transceive(&io, odd, 3, resp, &len), SCARD_E_INVALID_PARAMETER);
	const uint8_t bad_lc[] = { 0x00, 0xD6, 0x00, 0x00, 0x05, 1, 2 };
	len = sizeof(resp);
	cr_assert_eq(calais__t0_transceive(&io, bad_lc, sizeof(bad_lc), resp, &len), SCARD_E_INVALID_PARAMETER);
	cr_assert_eq(c.tpdus, 0);
}

/* ---- bounds ---------------------------------------------------------------------------- */

/* A card that sends NULL bytes for ever, each within WT: max_nulls (1000 in the CCID
 * backend) alone would let it hold the reader for 1000 x WT; the deadline ends it. */
Test(t0, null_bytes_end_at_the_deadline, .timeout = 10)
{
	struct card c = { .null_forever = true, .recv_sleep_ms = 20 };
	struct calais__t0_io io = io_for(&c);
	io.max_nulls = 1000;
	io.deadline_ms = calais__now_ms() + 200;
	const uint8_t read[] = { 0x00, 0xB0, 0x00, 0x00, 0x04 };
	uint8_t resp[300];
	size_t len = sizeof(resp);
	long t0 = now_ms();
	cr_assert_eq(calais__t0_transceive(&io, read, sizeof(read), resp, &len), SCARD_E_TIMEOUT);
	cr_assert_lt(now_ms() - t0, 1000, "ended after %ld ms", now_ms() - t0);
	cr_assert_lt(c.recvs, 100);
}

/* A silent card with a long WT: the wait asked of the transport is what is left of the
 * exchange, not WT. */
Test(t0, waits_are_cut_to_the_deadline, .timeout = 10)
{
	struct card c = { .silent = true, .sleep_timeout = true };
	struct calais__t0_io io = io_for(&c);
	io.wt_ms = 60000;
	io.deadline_ms = calais__now_ms() + 200;
	const uint8_t read[] = { 0x00, 0xB0, 0x00, 0x00, 0x04 };
	uint8_t resp[300];
	size_t len = sizeof(resp);
	long t0 = now_ms();
	cr_assert_eq(calais__t0_transceive(&io, read, sizeof(read), resp, &len), SCARD_E_TIMEOUT);
	cr_assert_leq(c.max_timeout, 200);
	cr_assert_lt(now_ms() - t0, 1000, "ended after %ld ms", now_ms() - t0);
	/* Within the deadline a silent card is still a mute card. */
	struct card d = { .silent = true };
	io = io_for(&d);
	io.deadline_ms = calais__now_ms() + 60000;
	len = sizeof(resp);
	cr_assert_eq(calais__t0_transceive(&io, read, sizeof(read), resp, &len),
	             SCARD_W_UNRESPONSIVE_CARD);
}

Test(t0, cancel_is_seen_between_waits, .timeout = 10)
{
	struct card c = { .null_forever = true, .recv_sleep_ms = 1, .cancel_after = 5 };
	struct calais__t0_io io = io_for(&c);
	io.max_nulls = 1000;
	io.cancelled = c_cancelled;
	const uint8_t read[] = { 0x00, 0xB0, 0x00, 0x00, 0x04 };
	uint8_t resp[300];
	size_t len = sizeof(resp);
	cr_assert_eq(calais__t0_transceive(&io, read, sizeof(read), resp, &len), SCARD_E_CANCELLED);
	cr_assert_eq(c.recvs, 5);
}

/* TPDU level: a card answering 61xx for ever, slowly; each TPDU's wait is cut to the
 * deadline, and the deadline ends the GET RESPONSE chain long before its 256 rounds. */
struct tpdu_card {
	unsigned tpdus;
	uint32_t max_timeout;
};

static LONG slow_61xx(void *user, const uint8_t *t, size_t n, uint8_t *resp, size_t *resp_len,
                      uint32_t timeout_ms)
{
	struct tpdu_card *c = user;
	c->tpdus++;
	if (timeout_ms > c->max_timeout)
		c->max_timeout = timeout_ms;
	nap_ms(20);
	resp[0] = 0x61;
	resp[1] = 0x01;
	*resp_len = 2;
	return SCARD_S_SUCCESS;
}

Test(t0, tpdu_level_get_response_chain_ends_at_the_deadline, .timeout = 10)
{
	struct tpdu_card c = { 0 };
	struct calais__t0_io io = { .user = &c, .tpdu = slow_61xx, .wt_ms = 60000,
		                    .auto_get_response = true,
		                    .deadline_ms = calais__now_ms() + 200 };
	const uint8_t cmd[] = { 0x00, 0xCA, 0x00, 0x00 };
	uint8_t resp[600];
	size_t len = sizeof(resp);
	long t0 = now_ms();
	cr_assert_eq(calais__t0_transceive(&io, cmd, sizeof(cmd), resp, &len), SCARD_E_TIMEOUT);
	cr_assert_lt(now_ms() - t0, 1000, "ended after %ld ms", now_ms() - t0);
	cr_assert_leq(c.max_timeout, 200);
	cr_assert_lt(c.tpdus, 50);
}
