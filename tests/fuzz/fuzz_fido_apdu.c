/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* libFuzzer target: the APDUs an application sends to a FIDO reader's card (caller input,
 * untrusted like the device's). The input's first byte is the authenticator's CTAPHID
 * capabilities, the rest a stream of APDUs, each after a 2-byte big-endian length, sent
 * through the FIDO card (the NFC binding: SELECT, chaining, extended lengths, U2F,
 * NFCCTAP_MSG/GETRESPONSE, GET RESPONSE) to the virtual authenticator of tests/hid/vauth.c
 * behind a fake HID seam. Answer buffers of 2 to 258 bytes or 8 KiB are chosen from the
 * length's top bit; the target traps when an answer overruns its buffer or a successful
 * one has no status word, and when the card's own buffers go out of step. */
#include <stdlib.h>

#include "hid.h"
#include "vauth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct vauth va;

static enum calais__hid_status f_write(struct calais__hid_dev *h, const uint8_t *buf, size_t len)
{
	if (len != VAUTH_REPORT)
		__builtin_trap();
	vauth_output(&va, buf, calais__now_ms());
	return CALAIS__HID_OK;
}

static enum calais__hid_status f_read(struct calais__hid_dev *h, uint8_t *buf, size_t cap,
                                      size_t *n, uint32_t timeout_ms)
{
	uint64_t wake;
	/* Every answer of the model is due at once (no keepalives): nothing due means none
	 * will come, and the device is said gone rather than waited for. */
	if (cap < VAUTH_REPORT || !vauth_next(&va, buf, UINT64_MAX, &wake))
		return CALAIS__HID_NO_DEVICE;
	*n = VAUTH_REPORT;
	return CALAIS__HID_OK;
}

static const struct calais__hid_ops fake = {
	.name = "fuzz",
	.write = f_write,
	.read = f_read,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct calais__ctaphid c;
	static struct calais__fido_card k;
	static uint8_t rx[8192];
	if (size < 1)
		return 0;
	vauth_init(&va, data[0]);
	memset(&c, 0, sizeof(c));
	memset(&k, 0, sizeof(k));
	c.ops = &fake;
	c.h = (struct calais__hid_dev *)&va;
	c.name = "fuzz";
	k.c = &c;
	if (calais__fido_reset(&k, calais__now_ms() + 60000) != SCARD_S_SUCCESS)
		__builtin_trap(); /* the model always answers INIT */
	data++;
	size--;
	for (int i = 0; i < 64 && size >= 2; i++) {
		size_t n = (size_t)(data[0] & 0x7F) << 8 | data[1];
		size_t cap = (data[0] & 0x80) ? 2 + (data[1] % 257) : sizeof(rx);
		data += 2;
		size -= 2;
		if (n > size)
			n = size;
		size_t rl = cap;
		LONG rv = calais__fido_transmit(&k, data, n, rx, &rl, calais__now_ms() + 60000);
		if (rv == SCARD_S_SUCCESS && (rl > cap || rl < 2))
			__builtin_trap();
		if (k.out_off > k.out_len || k.out_len > CALAIS__CTAPHID_MAX_MSG ||
		    k.chain_len > sizeof(k.chain))
			__builtin_trap();
		data += n;
		size -= n;
	}
	return 0;
}
