/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The serial backend (backends/serial/serial.c and phoenix.c) compiled into a fuzz target
 * with the virtual clock, over a fake port in place of lib/platform/serial-posix.c: what
 * the reader or card sends comes from the input, what the backend writes is echoed back
 * first (the GemPC reader echoes each frame; a Phoenix line, RX and TX tied, each byte,
 * a real FF as FF FF under the parity marking), unless the input's mode turns echoing
 * off and gives the echo itself.
 * Input after the target's mode byte: chunks [k][len][len bytes]. k bit 0 (GemPC): the
 * bytes are a CCID message wrapped as the reader frames it (03 06 ... LRC, its bSlot and
 * bSeq those of the last frame written, when it has a header); else they go on the line
 * as they are. k bit 1: the line is silent (one read times out) before them. When the
 * chunks end the line is silent. After MAX_CALLS port calls every read times out,
 * whatever the input says; a backend still reading after HARD_CALLS is a hang (trap). */
#ifndef CALAIS_FUZZ_SERIAL_FAKE_H
#define CALAIS_FUZZ_SERIAL_FAKE_H

#include "vclock.h"
#include "../../backends/serial/serial.c"
#include "../../backends/serial/phoenix.c"

#define MAX_CALLS 4096
#define HARD_CALLS 100000

struct calais__serial {
	bool mark_errors;
};

static struct {
	const uint8_t *p;
	size_t left;
	bool echo;
	unsigned calls;
	unsigned modem;
	/* Bytes due before the input's: the echo, and the chunk being sent. */
	uint8_t q[2 * (CALAIS__CCID_HEADER + 271 + 3) + 600];
	size_t q_len, q_off;
	bool silent; /* the next read times out before the chunk queued */
	uint8_t last_slot, last_seq;
	struct calais__serial port;
} fz;

static void fz_reset(const uint8_t *p, size_t n, bool echo, unsigned modem)
{
	memset(&fz, 0, sizeof(fz));
	fz.p = p;
	fz.left = n;
	fz.echo = echo;
	fz.modem = modem;
}

static void q_put(const uint8_t *b, size_t n)
{
	if (fz.q_off == fz.q_len)
		fz.q_off = fz.q_len = 0;
	if (n > sizeof(fz.q) - fz.q_len)
		n = sizeof(fz.q) - fz.q_len;
	memcpy(fz.q + fz.q_len, b, n);
	fz.q_len += n;
}

/* The next chunk of the input into the queue; false when there is none. */
static bool next_chunk(void)
{
	if (fz.left < 2)
		return false;
	uint8_t k = fz.p[0];
	size_t n = fz.p[1];
	fz.p += 2, fz.left -= 2;
	if (n > fz.left)
		n = fz.left;
	if (k & 2)
		fz.silent = true;
	if (k & 1) {
		uint8_t f[2 + 255 + 1] = { 0x03, 0x06 };
		memcpy(f + 2, fz.p, n);
		if (n >= CALAIS__CCID_HEADER) {
			f[2 + 5] = fz.last_slot;
			f[2 + 6] = fz.last_seq;
		}
		uint8_t x = 0;
		for (size_t i = 0; i < n + 2; i++)
			x ^= f[i];
		f[n + 2] = x;
		q_put(f, n + 3);
	} else {
		q_put(fz.p, n);
	}
	fz.p += n, fz.left -= n;
	return true;
}

static bool fz_call(void)
{
	if (++fz.calls > HARD_CALLS)
		__builtin_trap(); /* the backend keeps at a silent line */
	return fz.calls <= MAX_CALLS;
}

LONG calais__serial_open(const char *path, uint32_t bps, enum calais__serial_parity parity,
                         unsigned stop_bits, bool mark_errors, calais__serial_t **out)
{
	(void)path, (void)bps, (void)parity, (void)stop_bits;
	fz.port.mark_errors = mark_errors;
	*out = &fz.port;
	return SCARD_S_SUCCESS;
}

void calais__serial_close(calais__serial_t *s)
{
	(void)s;
}

LONG calais__serial_configure(calais__serial_t *s, uint32_t bps, enum calais__serial_parity parity,
                              unsigned stop_bits, bool mark_errors)
{
	(void)bps, (void)parity, (void)stop_bits;
	s->mark_errors = mark_errors;
	return SCARD_S_SUCCESS;
}

LONG calais__serial_write(calais__serial_t *s, const uint8_t *b, size_t n, size_t *done,
                          uint32_t timeout_ms)
{
	(void)timeout_ms;
	if (done)
		*done = 0;
	if (!fz_call())
		return SCARD_F_COMM_ERROR;
	if (n >= 2 + CALAIS__CCID_HEADER && b[0] == 0x03 && b[1] == 0x06) {
		fz.last_slot = b[2 + 5];
		fz.last_seq = b[2 + 6];
	}
	if (fz.echo) {
		for (size_t i = 0; i < n; i++) {
			q_put(b + i, 1);
			if (s->mark_errors && b[i] == 0xFF)
				q_put(b + i, 1);
		}
	}
	if (done)
		*done = n;
	return SCARD_S_SUCCESS;
}

LONG calais__serial_read(calais__serial_t *s, uint8_t *b, size_t n, size_t *got,
                         uint32_t timeout_ms)
{
	(void)s;
	size_t k = 0;
	LONG rv = SCARD_S_SUCCESS;
	if (!fz_call())
		rv = SCARD_E_TIMEOUT;
	while (rv == SCARD_S_SUCCESS && k < n) {
		if (fz.q_off == fz.q_len && !next_chunk()) {
			rv = SCARD_E_TIMEOUT;
			break;
		}
		if (fz.silent) {
			fz.silent = false;
			rv = SCARD_E_TIMEOUT;
			break;
		}
		if (fz.q_off < fz.q_len)
			b[k++] = fz.q[fz.q_off++];
	}
	if (got)
		*got = k;
	if (rv == SCARD_E_TIMEOUT)
		fz_sleep_us(timeout_ms * 1000u + 1000u);
	return rv;
}

void calais__serial_flush(calais__serial_t *s)
{
	(void)s;
	fz.q_off = fz.q_len = 0;
}

void calais__serial_discard(calais__serial_t *s)
{
	calais__serial_flush(s);
}

void calais__serial_rts(calais__serial_t *s, bool on)
{
	(void)s, (void)on;
}

void calais__serial_dtr(calais__serial_t *s, bool on)
{
	(void)s, (void)on;
}

LONG calais__serial_modem(calais__serial_t *s, unsigned *lines)
{
	(void)s;
	if (fz.modem & 0x10)
		return SCARD_F_COMM_ERROR;
	*lines = fz.modem & 0xF;
	return SCARD_S_SUCCESS;
}

/* A reader as declare() makes it, not yet opened; the core's handle for it. */
static struct serial_priv fz_sp;
static struct calais__sreader *fz_sr;
static struct calais_reader fz_r;

static struct calais__sreader *fz_reader(const struct calais__gem_model *m, bool smartmouse,
                                         const char *opts)
{
	if (new_reader(&fz_sp, m, smartmouse, "fuzz", opts, &fz_sr) != SCARD_S_SUCCESS)
		return NULL;
	fz_r.priv = &fz_sr;
	return fz_sr;
}

/* What the core does with a reader: open it, poll, power up, select a protocol, two
 * exchanges, poll, power down, close. */
static void fz_run(struct calais__sreader *s, uint8_t mode)
{
	calais__mutex_lock(&s->port.lock);
	bool ok = open_reader(s);
	calais__mutex_unlock(&s->port.lock);
	if (!ok) {
		serial_close(&fz_r);
		return;
	}
	s->open = true;
	bool present;
	serial_slot_status(&fz_r, &present);
	uint8_t atr[MAX_ATR_SIZE];
	size_t atr_len = 0;
	if (serial_power_on(&fz_r, false, atr, &atr_len) == SCARD_S_SUCCESS) {
		if (atr_len > MAX_ATR_SIZE)
			__builtin_trap();
		uint32_t proto = (mode & 0x80) ? SCARD_PROTOCOL_T1 : SCARD_PROTOCOL_T0;
		if (serial_set_protocol(&fz_r, proto) == SCARD_S_SUCCESS) {
			static const uint8_t case4[5 + 255 + 1] = { 0x80, 0xEE, 0x00, 0x00, 0xFF };
			static uint8_t rx[70000];
			size_t rl = sizeof(rx);
			LONG rv = serial_transmit(&fz_r, proto, case4, sizeof(case4), rx, &rl, 10000);
			if (rv == SCARD_S_SUCCESS && rl > sizeof(rx))
				__builtin_trap();
			static const uint8_t case2[5] = { 0x00, 0xB0, 0x00, 0x00, 0x00 };
			rl = 16;
			rv = serial_transmit(&fz_r, proto, case2, sizeof(case2), rx, &rl, 10000);
			if (rv == SCARD_S_SUCCESS && rl > 16)
				__builtin_trap();
		}
	}
	serial_slot_status(&fz_r, &present);
	serial_close(&fz_r);
}

#endif
