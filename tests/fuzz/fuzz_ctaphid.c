/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* libFuzzer target: everything a FIDO authenticator sends over CTAPHID, through the FIDO
 * card (the NFC binding) down to the packet layer. The input is a stream of 64-byte input
 * reports, each after a flags byte: bit 0 puts the channel the host expects into the
 * report's first four bytes (the broadcast channel while a channel is being allocated),
 * bit 1 puts the host's INIT nonce at the payload's start, so the fuzzer gets past the
 * channel and nonce checks into lengths, sequences, keepalives, errors and answers. A fake
 * device behind the HID seam hands the reports out, at most 256 per input, then says it is
 * gone. The card is powered up and runs a fixed script of APDUs (SELECT, U2F VERSION and
 * REGISTER with GET RESPONSE, NFCCTAP_MSG with GETRESPONSE polling, a chained request);
 * the target traps when an answer overruns its buffer. */
#include <stdlib.h>

#include "hid-feed.h"

struct feed {
	struct hid_feed in; /* first: the device handle points at it */
	struct calais__ctaphid *c;
	bool init_pending; /* an INIT was written and not answered */
};

static const uint8_t NONCE[8] = { 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88 };

static void f_nonce(uint8_t *out, size_t n)
{
	memcpy(out, NONCE, n < sizeof(NONCE) ? n : sizeof(NONCE));
}

static void f_pause(const struct calais__ctaphid *c, uint32_t ms)
{
	(void)c;
	(void)ms;
}

static struct feed *feed_of(struct calais__hid_dev *h)
{
	return (struct feed *)h;
}

static enum calais__hid_status f_write(struct calais__hid_dev *h, const uint8_t *buf, size_t len)
{
	if (len != CALAIS__HID_REPORT)
		__builtin_trap(); /* CTAPHID writes whole reports */
	struct feed *f = feed_of(h);
	if (buf[4] == CALAIS__CTAPHID_INIT)
		f->init_pending = true;
	return CALAIS__HID_OK;
}

static enum calais__hid_status f_read(struct calais__hid_dev *h, uint8_t *buf, size_t cap,
                                      size_t *n, uint32_t timeout_ms)
{
	(void)timeout_ms;
	struct feed *f = feed_of(h);
	int flags = hid_feed_next(&f->in, buf, cap);
	if (flags < 0)
		return CALAIS__HID_NO_DEVICE;
	if (flags & 1) {
		uint32_t cid = f->c->cid ? f->c->cid : CALAIS__CTAPHID_BROADCAST;
		buf[0] = (uint8_t)(cid >> 24);
		buf[1] = (uint8_t)(cid >> 16);
		buf[2] = (uint8_t)(cid >> 8);
		buf[3] = (uint8_t)cid;
	}
	if ((flags & 2) && (buf[4] & 0x80))
		memcpy(buf + 7, NONCE, sizeof(NONCE));
	*n = CALAIS__HID_REPORT;
	return CALAIS__HID_OK;
}

static const struct calais__hid_ops fake = {
	.name = "fuzz",
	.write = f_write,
	.read = f_read,
};

static void run(struct calais__fido_card *k, const uint8_t *apdu, size_t n, size_t cap)
{
	static uint8_t rx[CALAIS__CTAPHID_MAX_MSG + 16];
	size_t rl = cap;
	LONG rv = calais__fido_transmit(k, apdu, n, rx, &rl, calais__now_ms() + 60000);
	if (rv == SCARD_S_SUCCESS && (rl > cap || rl < 2))
		__builtin_trap();
	if (k->c->msg_len > CALAIS__CTAPHID_MAX_MSG || k->out_off > k->out_len)
		__builtin_trap();
	/* Fetch what is left, as a short-APDU client does. */
	for (int i = 0; rv == SCARD_S_SUCCESS && rl >= 2 && i < 40; i++) {
		uint8_t next[5] = { 0x00, 0xC0, 0x00, 0x00, rx[rl - 1] };
		if (rx[rl - 2] == 0x91)
			memcpy(next, (uint8_t[]){ 0x80, 0x11, 0x00, 0x00, 0x00 }, 5);
		else if (rx[rl - 2] != 0x61)
			break;
		rl = cap;
		rv = calais__fido_transmit(k, next, 5, rx, &rl, calais__now_ms() + 60000);
		if (rv == SCARD_S_SUCCESS && (rl > cap || rl < 2))
			__builtin_trap();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct calais__ctaphid c;
	static struct calais__fido_card k;
	struct feed f = { .in = { .p = data, .left = size }, .c = &c };
	memset(&c, 0, sizeof(c));
	memset(&k, 0, sizeof(k));
	c.ops = &fake;
	c.h = (struct calais__hid_dev *)&f;
	c.name = "fuzz";
	c.nonce = f_nonce;
	c.pause = f_pause;
	k.c = &c;
	if (calais__fido_reset(&k, calais__now_ms() + 60000) != SCARD_S_SUCCESS)
		return 0;
	static const uint8_t select[] = { 0x00, 0xA4, 0x04, 0x00, 0x08, 0xA0, 0x00,
	                                  0x00, 0x06, 0x47, 0x2F, 0x00, 0x01 };
	run(&k, select, sizeof(select), 300);
	static const uint8_t version[] = { 0x00, 0x03, 0x00, 0x00, 0x00 };
	run(&k, version, sizeof(version), 300);
	uint8_t reg[5 + 64 + 1] = { 0x00, 0x01, 0x03, 0x00, 64 };
	run(&k, reg, sizeof(reg), 258);
	static const uint8_t info[] = { 0x80, 0x10, 0x80, 0x00, 0x01, 0x04, 0x00 };
	run(&k, info, sizeof(info), 300);
	uint8_t chain[5 + 250] = { 0x90, 0x10, 0x80, 0x00, 250 };
	run(&k, chain, sizeof(chain), 300);
	uint8_t last[5 + 10 + 1] = { 0x80, 0x10, 0x80, 0x00, 10 };
	run(&k, last, sizeof(last), 16);
	uint8_t rc, st;
	calais__ctaphid_call(&c, CALAIS__CTAPHID_PING, reg, sizeof(reg), CALAIS__CTAPHID_KA_WAIT,
	                     &rc, &st, calais__now_ms() + 60000);
	return 0;
}
