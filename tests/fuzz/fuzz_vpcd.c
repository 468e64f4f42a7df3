/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* libFuzzer target: everything a vpcd card (vicc, a virtual card over TCP) sends, as the
 * vpcd backend reads it: the ATR gathered at insertion, then the answers to a power-up,
 * two APDUs (one with room for 16 bytes only), a reset and a power-down. backends/vpcd/
 * vpcd.c is compiled into this target; the card's side is a socket pair holding the
 * whole input, closed after it, so no read ever waits and the end of the input is the
 * card leaving. */
#include "../../backends/vpcd/vpcd.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct vpcd_priv vp;
static struct slot sl;
static struct vpcd_reader vr;
static struct calais_reader fr;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool once;
	if (!once) {
		calais__mutex_init(&vp.lock);
		if (!wake_open(vp.wake))
			__builtin_trap();
		once = true;
	}
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
		return 0;
	/* The card's bytes, all sent before the backend reads (the pair's buffer holds far
	 * more than libFuzzer's longest input). */
	for (size_t off = 0; off < size;) {
		ssize_t k = write(sv[1], data + off, size - off);
		if (k <= 0)
			__builtin_trap();
		off += (size_t)k;
	}
	shutdown(sv[1], SHUT_WR);
	sl = (struct slot){ .vp = &vp, .port = 35963, .listen_sock = BAD_SOCK, .card_sock = sv[0] };
	snprintf(sl.peer, sizeof(sl.peer), "fuzz");
	vr.s = &sl;
	fr.priv = &vr;

	calais__mutex_lock(&vp.lock);
	start_atr(&sl);
	if (sl.atr_wait)
		read_atr(&sl);
	bool inserted = !sl.atr_wait && sl.card_sock != BAD_SOCK && !sl.dropping;
	calais__mutex_unlock(&vp.lock);
	if (inserted) {
		if (sl.atr_got < 3 || sl.atr_got > 2 + MAX_ATR_SIZE)
			__builtin_trap();
		uint8_t atr[MAX_ATR_SIZE];
		size_t atr_len = 0;
		if (vpcd_power_on(&fr, false, atr, &atr_len) == SCARD_S_SUCCESS &&
		    (atr_len == 0 || atr_len > MAX_ATR_SIZE))
			__builtin_trap();
		static const uint8_t case4[5 + 255 + 1] = { 0x80, 0xEE, 0x00, 0x00, 0xFF };
		static uint8_t rx[MAX_MSG];
		size_t rl = sizeof(rx);
		LONG rv = vpcd_transmit(&fr, SCARD_PROTOCOL_T1, case4, sizeof(case4), rx, &rl, 1000);
		if (rv == SCARD_S_SUCCESS && (rl == 0 || rl > sizeof(rx)))
			__builtin_trap();
		static const uint8_t case2[5] = { 0x00, 0xB0, 0x00, 0x00, 0x00 };
		rl = 16;
		rv = vpcd_transmit(&fr, SCARD_PROTOCOL_T1, case2, sizeof(case2), rx, &rl, 1000);
		if (rv == SCARD_S_SUCCESS && rl > 16)
			__builtin_trap();
		vpcd_power_on(&fr, true, atr, &atr_len);
		bool present;
		vpcd_slot_status(&fr, &present);
		vpcd_power_off(&fr);
	}
	calais__mutex_lock(&vp.lock);
	if (sl.card_sock != BAD_SOCK)
		sock_close(sl.card_sock);
	sl.card_sock = BAD_SOCK;
	wake_drain(vp.wake[0]);
	calais__mutex_unlock(&vp.lock);
	close(sv[1]);
	return 0;
}
