/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* libFuzzer target: everything a Ledger device sends, through the Ledger APDU framing. The
 * input is a stream of 64-byte input reports, each after a flags byte: bit 0 puts the
 * channel, tag and sequence number the host expects into the report's first five bytes,
 * so the fuzzer reaches the length and reassembly code. A fake device behind the HID seam
 * hands them out, at most 256 per input, then says it is gone. Three APDUs are exchanged
 * with answer buffers of 2, 300 and 65538 bytes; the target traps when an answer
 * overruns its buffer or a successful one lacks its status word. */
#include <stdlib.h>

#include "hid-feed.h"

struct feed {
	struct hid_feed in; /* first: the device handle points at it */
	unsigned seq; /* of the next report the host expects */
};

static enum calais__hid_status f_write(struct calais__hid_dev *h, const uint8_t *buf, size_t len)
{
	struct feed *f = (struct feed *)h;
	if (len != CALAIS__HID_REPORT || buf[0] != 0x01 || buf[1] != 0x01 || buf[2] != 0x05)
		__builtin_trap(); /* every report framed */
	f->seq = 0; /* an answer starts over after each command report */
	return CALAIS__HID_OK;
}

static enum calais__hid_status f_read(struct calais__hid_dev *h, uint8_t *buf, size_t cap,
                                      size_t *n, uint32_t timeout_ms)
{
	(void)timeout_ms;
	struct feed *f = (struct feed *)h;
	int flags = hid_feed_next(&f->in, buf, cap);
	if (flags < 0)
		return CALAIS__HID_NO_DEVICE;
	if (flags & 1) {
		buf[0] = 0x01;
		buf[1] = 0x01;
		buf[2] = 0x05;
		buf[3] = (uint8_t)(f->seq >> 8);
		buf[4] = (uint8_t)f->seq;
		f->seq++;
	}
	*n = CALAIS__HID_REPORT;
	return CALAIS__HID_OK;
}

static const struct calais__hid_ops fake = {
	.name = "fuzz",
	.write = f_write,
	.read = f_read,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct feed f = { .in = { .p = data, .left = size } };
	static uint8_t rx[65538];
	static const size_t caps[3] = { 2, 300, sizeof(rx) };
	static uint8_t apdu[5 + 255] = { 0xE0, 0x01, 0x00, 0x00, 255 };
	static const size_t lens[3] = { 4, 5 + 255, 5 };
	for (int i = 0; i < 3; i++) {
		size_t rl = caps[i];
		LONG rv = calais__ledger_transmit(&fake, (struct calais__hid_dev *)&f, "fuzz", NULL,
		                                  apdu, lens[i], rx, &rl, calais__now_ms() + 60000);
		if (rv == SCARD_S_SUCCESS && (rl > caps[i] || rl < 2))
			__builtin_trap();
	}
	return 0;
}
