/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* libFuzzer target: everything an ICCD token (USB ICCD rev. 1.0, versions A and B) answers
 * on the control pipe. backends/ccid/usb-iccd.c is compiled into this target with the
 * virtual clock (vclock.h), so a token that stays busy or asks to be polled again after
 * 655 s costs no real time; the CCID slot layer above it powers a card up, selects a
 * protocol, exchanges APDUs and polls the slot, as the backend does.
 * Input: one mode byte (bit 0 version B, bit 1 T=1, bit 2 extended APDU level), then one
 * answer per control request: a byte c (0xF8..0xFF: the transfer fails with one of the
 * USB errors; 0xF7: a 16-bit little-endian length follows; else c is the length of an IN
 * request's data, which follow; an OUT request takes the byte alone). A token that has
 * no more answers times out; after MAX_CALLS requests it only times out, whatever the
 * input says, and a layer still asking after HARD_CALLS is a hang (trap). */
#include "vclock.h"
#include "../../backends/ccid/usb-iccd.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_CALLS 512
#define HARD_CALLS 20000

struct feed {
	const uint8_t *p;
	size_t left;
	unsigned calls;
};
static struct feed feed;

static enum calais__usb_status f_control(struct calais__usb_handle *h, uint8_t type, uint8_t req,
                                         uint16_t value, uint16_t index, uint8_t *buf, size_t len,
                                         size_t *done, uint32_t timeout_ms)
{
	static const enum calais__usb_status errs[8] = {
		CALAIS__USB_TIMEOUT, CALAIS__USB_STALL, CALAIS__USB_IO, CALAIS__USB_OVERFLOW,
		CALAIS__USB_CANCELLED, CALAIS__USB_NO_MEM, CALAIS__USB_TIMEOUT, CALAIS__USB_NO_DEVICE,
	};
	(void)h, (void)req, (void)value, (void)index;
	*done = 0;
	if (++feed.calls > HARD_CALLS)
		__builtin_trap(); /* the layer ignores a token that only times out */
	if (feed.calls > MAX_CALLS || !feed.left) {
		fz_sleep_us(timeout_ms * 1000u);
		return CALAIS__USB_TIMEOUT;
	}
	uint8_t c = *feed.p++;
	feed.left--;
	if (c >= 0xF8)
		return errs[c - 0xF8];
	if (!(type & 0x80))
		return CALAIS__USB_OK;
	size_t n = c;
	if (c == 0xF7) {
		if (feed.left < 2)
			return CALAIS__USB_IO;
		n = (size_t)(feed.p[0] | feed.p[1] << 8);
		feed.p += 2;
		feed.left -= 2;
	}
	if (n > feed.left)
		n = feed.left;
	if (n > len)
		return CALAIS__USB_OVERFLOW; /* libusb: more than asked for */
	memcpy(buf, feed.p, n);
	feed.p += n;
	feed.left -= n;
	*done = n;
	return CALAIS__USB_OK;
}

static const struct calais__usb_ops fake_ops = { .name = "fuzz", .control = f_control };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	uint8_t mode = data[0];
	feed = (struct feed){ data + 1, size - 1, 0 };
	/* What an ICCD token's class descriptor says (version A: character level T=0;
	 * version B: short or extended APDU level). */
	struct calais__ccid_desc desc = {
		.voltage_support = 1,
		.protocols = (mode & 1) ? 3 : 1,
		.default_clock_khz = 3580,
		.max_data_rate = 9600,
		.max_ifsd = 254,
		.features = (mode & 1) ? ((mode & 4) ? CALAIS__CCID_LEVEL_EXTENDED
		                                     : CALAIS__CCID_LEVEL_SHORT) | 0xBEu
		                       : 0x000000BEu,
		.max_message_length = (mode & 4) ? 10 + CALAIS__ICCD_MAX_DATA : 271,
	};
	struct calais__ccid_strategy st;
	calais__ccid_strategy(&desc, &st);
	struct calais__ccid_port port = { .name = "fuzz" };
	struct calais__iccd iccd = { .ops = &fake_ops, .version_b = mode & 1, .name = "fuzz",
	                             .port = &port };
	port.user = &iccd;
	port.send = calais__iccd_send;
	port.recv = calais__iccd_recv;
	port.max_busy = 1;
	if (calais__ccid_port_init(&port, desc.max_message_length) != SCARD_S_SUCCESS)
		return 0;
	struct calais__ccid_slot s = { .port = &port, .desc = &desc, .st = &st };
	uint8_t atr[MAX_ATR_SIZE];
	size_t atr_len = 0;
	static uint8_t rx[70000];
	bool present;
	calais__ccid_slot_status(&s, &present);
	if (calais__ccid_power_on(&s, false, atr, &atr_len) == SCARD_S_SUCCESS) {
		if (atr_len > MAX_ATR_SIZE)
			__builtin_trap();
		uint32_t proto = (mode & 2) ? SCARD_PROTOCOL_T1 : SCARD_PROTOCOL_T0;
		if (calais__ccid_set_protocol(&s, proto) == SCARD_S_SUCCESS) {
			static const uint8_t case4[5 + 255 + 1] = { 0x80, 0xEE, 0x00, 0x00, 0xFF };
			size_t rl = sizeof(rx);
			LONG rv = calais__ccid_transmit(&s, proto, case4, sizeof(case4), rx, &rl);
			if (rv == SCARD_S_SUCCESS && rl > sizeof(rx))
				__builtin_trap();
			static const uint8_t case2[5] = { 0x00, 0xB0, 0x00, 0x00, 0x00 };
			rl = 16;
			rv = calais__ccid_transmit(&s, proto, case2, sizeof(case2), rx, &rl);
			if (rv == SCARD_S_SUCCESS && rl > 16)
				__builtin_trap();
		}
	}
	calais__ccid_slot_status(&s, &present);
	calais__ccid_power_off(&s);
	calais__ccid_port_free(&port);
	return 0;
}
