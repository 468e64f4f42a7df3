/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* libFuzzer target: everything a CCID device sends. The input is a USB configuration
 * descriptor (through the interface finder) and then a stream of RDR_to_PC replies that a
 * fake port hands to the message and slot layers while they power a card up, select a
 * protocol, exchange APDUs at the level the input chooses, run part 10 controls and
 * poll the slot. Replies may be patched to carry the expected bSeq/bSlot, so the fuzzer
 * reaches past the sequence check into ATRs, T=1 blocks, chains and status bytes. */
#include <stdlib.h>

#include "ccid.h"
#include "usb.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* After MAX_CALLS replies the device only times out, whatever the input holds; layers
 * still reading after HARD_CALLS are in a loop (trap). */
#define MAX_CALLS 2048
#define HARD_CALLS 100000

struct feed {
	const uint8_t *p;
	size_t left;
	uint8_t slot, seq; /* of the last command sent */
	unsigned calls;
};

static LONG f_send(void *user, const uint8_t *msg, size_t n, uint32_t timeout_ms)
{
	struct feed *f = user;
	if (n < 10)
		__builtin_trap(); /* the layer never sends less than a header */
	f->slot = msg[5];
	f->seq = msg[6];
	return SCARD_S_SUCCESS;
}

static LONG f_recv(void *user, uint8_t *buf, size_t cap, size_t *n, uint32_t timeout_ms)
{
	struct feed *f = user;
	if (++f->calls > HARD_CALLS)
		__builtin_trap();
	if (f->left < 3 || f->calls > MAX_CALLS)
		return SCARD_E_TIMEOUT;
	uint8_t flags = f->p[0];
	size_t len = (size_t)(f->p[1] | f->p[2] << 8);
	f->p += 3;
	f->left -= 3;
	if (len > f->left)
		len = f->left;
	const uint8_t *msg = f->p;
	f->p += len;
	f->left -= len;
	if (len > cap)
		return SCARD_F_COMM_ERROR;
	memcpy(buf, msg, len);
	if ((flags & 1) && len >= 10) {
		buf[5] = f->slot;
		buf[6] = f->seq;
	}
	*n = len;
	return SCARD_S_SUCCESS;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 4)
		return 0;
	uint8_t mode = data[0];
	size_t cfg_len = data[1];
	data += 2;
	size -= 2;
	if (cfg_len > size)
		cfg_len = size;
	struct calais__usb_ccid_if ifs[CALAIS__USB_MAX_CCID_IFS];
	size_t n_ifs = calais__usb_find_ccid(data, cfg_len, ifs, CALAIS__USB_MAX_CCID_IFS);
	for (size_t i = 0; i < n_ifs; i++) {
		if (!ifs[i].class_desc || ifs[i].class_desc < data ||
		    ifs[i].class_desc + 54 > data + cfg_len)
			__builtin_trap();
		struct calais__ccid_desc d;
		calais__ccid_desc_parse(ifs[i].class_desc, 54, &d);
	}
	data += cfg_len;
	size -= cfg_len;

	static const uint32_t levels[4] = { 0, CALAIS__CCID_LEVEL_TPDU, CALAIS__CCID_LEVEL_SHORT,
	                                    CALAIS__CCID_LEVEL_EXTENDED };
	struct calais__ccid_desc desc = {
		.max_slot_index = 0,
		.voltage_support = 7,
		.protocols = 3,
		.default_clock_khz = 4000,
		.max_data_rate = 344086,
		.max_ifsd = 254,
		.features = levels[mode & 3] | ((mode & 8) ? 0x4BEu : 0),
		.max_message_length = (mode & 16) ? 271 : 65554,
		.pin_support = 3,
	};
	struct calais__ccid_strategy st;
	calais__ccid_strategy(&desc, &st);
	struct feed f = { .p = data, .left = size };
	struct calais__ccid_port port = { .user = &f, .send = f_send, .recv = f_recv, .name = "fuzz" };
	if (calais__ccid_port_init(&port, desc.max_message_length) != SCARD_S_SUCCESS)
		return 0;
	struct calais__ccid_slot s = { .port = &port, .desc = &desc, .st = &st, .escape = true };

	uint8_t atr[MAX_ATR_SIZE];
	size_t atr_len = 0;
	static uint8_t rx[70000];
	if (calais__ccid_power_on(&s, false, atr, &atr_len) == SCARD_S_SUCCESS) {
		if (atr_len > MAX_ATR_SIZE)
			__builtin_trap();
		uint32_t proto = (mode & 4) ? SCARD_PROTOCOL_T1 : SCARD_PROTOCOL_T0;
		if (calais__ccid_set_protocol(&s, proto) == SCARD_S_SUCCESS) {
			uint8_t apdu[300] = { 0x80, 0xEE, 0x00, 0x00, 0xFF };
			size_t rl = (mode & 32) ? 16 : sizeof(rx);
			LONG rv = calais__ccid_transmit(&s, proto, apdu, 5 + 255 + 1, rx, &rl);
			if (rv == SCARD_S_SUCCESS && rl > ((mode & 32) ? 16 : sizeof(rx)))
				__builtin_trap();
			uint8_t case2[5] = { 0x00, 0xB0, 0x00, 0x00, 0x00 };
			rl = sizeof(rx);
			calais__ccid_transmit(&s, proto, case2, 5, rx, &rl);
		}
	}
	uint8_t verify[19 + 13] = { 30, 30, 0x82, 0x08, 0x00, 8, 4, 0x02, 1, 0x09, 0x04, 0, 0, 0, 0,
	                            13, 0, 0, 0, 0x00, 0x20, 0x00, 0x81, 0x08 };
	size_t ol = 0;
	uint8_t out[300];
	calais__ccid_control(&s, CALAIS__CCID_IOCTL(FEATURE_VERIFY_PIN_DIRECT), verify,
	                     sizeof(verify), out, sizeof(out), &ol);
	calais__ccid_control(&s, CALAIS__CCID_IOCTL(FEATURE_CCID_ESC_COMMAND), verify, 4, out,
	                     sizeof(out), &ol);
	bool present;
	calais__ccid_slot_status(&s, &present);
	calais__ccid_power_off(&s);
	calais__ccid_port_free(&port);
	return 0;
}
