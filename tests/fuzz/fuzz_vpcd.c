/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* libFuzzer target: everything a vpcd card (vicc, a virtual card over TCP) sends, as the
 * vpcd backend reads it: the ATR gathered at insertion, then the answers to a power-up,
 * two APDUs (one with room for 16 bytes only), a reset and a power-down. backends/vpcd/
 * vpcd.c is compiled into this target on the virtual clock (vclock.h); the card's side
 * is one end of a socket pair, and the card speaks when the backend waits for it (its
 * poll() is this file's): each wait puts the input's next chunk on the line.
 * Input: chunks [k][len][len bytes]; k bit 1: the card stays silent through that wait
 * instead (the bytes are dropped). After the last chunk the card hangs up. After
 * MAX_CALLS waits the card is silent, whatever the input holds; a backend still waiting
 * after HARD_CALLS is a hang (trap). Bytes sent before the backend asks for them are
 * data sent unasked, which it must refuse. */
#include <poll.h>

#include "vclock.h"

static int fz_poll(struct pollfd *p, nfds_t n, int timeout_ms);
#define poll fz_poll
#include "../../backends/vpcd/vpcd.c"
#undef poll

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_CALLS 1024
#define HARD_CALLS 100000

static struct {
	const uint8_t *p;
	size_t left;
	int card;      /* the card's end of the pair */
	bool hung_up;
	unsigned calls;
} fz;

enum step { STEP_SENT, STEP_SILENT, STEP_GONE };

/* The card's next move: its next chunk on the line, silence, or hanging up. */
static enum step card_step(void)
{
	if (++fz.calls > HARD_CALLS)
		__builtin_trap();
	if (fz.calls > MAX_CALLS)
		return STEP_SILENT;
	if (fz.left < 2) {
		if (!fz.hung_up)
			shutdown(fz.card, SHUT_WR);
		fz.hung_up = true;
		return STEP_GONE;
	}
	uint8_t k = fz.p[0];
	size_t n = fz.p[1];
	fz.p += 2, fz.left -= 2;
	if (n > fz.left)
		n = fz.left;
	const uint8_t *b = fz.p;
	fz.p += n, fz.left -= n;
	if (k & 2)
		return STEP_SILENT;
	/* The pair's buffer takes far more than any chunk. */
	if (n && write(fz.card, b, n) != (ssize_t)n)
		__builtin_trap();
	return STEP_SENT;
}

static int fz_poll(struct pollfd *p, nfds_t n, int timeout_ms)
{
	if (card_step() == STEP_SILENT) {
		fz_sleep_us((uint32_t)(timeout_ms < 0 ? 1000000 : timeout_ms) * 1000u);
		return 0;
	}
	return poll(p, n, 0);
}

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
	fz.p = data;
	fz.left = size;
	fz.card = sv[1];
	fz.hung_up = false;
	fz.calls = 0;
	sl = (struct slot){ .vp = &vp, .port = 35963, .listen_sock = BAD_SOCK, .card_sock = sv[0] };
	snprintf(sl.peer, sizeof(sl.peer), "fuzz");
	vr.s = &sl;
	fr.priv = &vr;

	/* Insertion, as the event thread runs it: power on and GET ATR, then the ATR read
	 * as it comes, until it is whole, the card leaves or its time is up. */
	calais__mutex_lock(&vp.lock);
	start_atr(&sl);
	while (sl.atr_wait) {
		enum step st = card_step();
		if (st == STEP_SILENT) {
			discard_card(&sl);
			break;
		}
		read_atr(&sl);
		if (st == STEP_GONE && sl.atr_wait)
			__builtin_trap(); /* the card hung up: read_atr() must have seen it */
	}
	bool inserted = sl.card_sock != BAD_SOCK && !sl.dropping;
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
		if (vpcd_power_on(&fr, true, atr, &atr_len) == SCARD_S_SUCCESS &&
		    (atr_len == 0 || atr_len > MAX_ATR_SIZE))
			__builtin_trap();
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
