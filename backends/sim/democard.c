/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The demo card: a small ISO/IEC 7816-4 file system for the simulated backend, used by
 * the demo, the examples and the tests. Every byte of a command is untrusted. */
#include "calais-internal.h"

#include <string.h>

/* 3B 8E 01: direct convention, TD1 present, 14 historical bytes; TD1 offers T=1 only,
 * so TCK (AD, the XOR of T0 to the last historical byte) closes the ATR. */
static const uint8_t demo_atr[] = { 0x3B, 0x8E, 0x01, 'C', 'a', 'l', 'a', 'i', 's',
	                            'D', 'e', 'm', 'o', 'C', 'a', 'r', 'd', 0xAD };

static const char hello[] = "Hello from the Calais demo card!\n";
static const uint8_t demo_aid[] = { 0xA0, 0x00, 0x00, 0x06, 0x47, 0x43, 0x41, 0x4C };
static const uint8_t pin[] = { '1', '2', '3', '4' };

#define FID_MF 0x3F00
#define FID_HELLO 0x0001
#define FID_DF 0x5000
#define FID_BIG 0x5001
#define BIG_SIZE 300
#define PIN_TRIES 3

struct democard_state {
	uint16_t current;  /* selected file; 0 right after reset (MF implied) */
	bool verified;
	bool initialised;
	uint8_t tries_left;
	uint32_t challenge; /* GET CHALLENGE sequence */
};

/* A parsed command APDU (ISO/IEC 7816-3 12.1: cases 1 to 4, short and extended). */
struct apdu {
	uint8_t cla, ins, p1, p2;
	const uint8_t *data;
	size_t lc;
	size_t le; /* 0: no Le field */
	bool has_le;
};

static bool parse_apdu(const uint8_t *b, size_t n, struct apdu *a)
{
	memset(a, 0, sizeof(*a));
	if (n < 4)
		return false;
	a->cla = b[0], a->ins = b[1], a->p1 = b[2], a->p2 = b[3];
	if (n == 4) /* case 1 */
		return true;
	if (n == 5) { /* case 2 short */
		a->has_le = true;
		a->le = b[4] ? b[4] : 256;
		return true;
	}
	if (b[4] != 0) { /* short Lc */
		a->lc = b[4];
		if (n == 5 + a->lc)
			return a->data = b + 5, true;
		if (n == 6 + a->lc) {
			a->data = b + 5;
			a->has_le = true;
			a->le = b[5 + a->lc] ? b[5 + a->lc] : 256;
			return true;
		}
		return false;
	}
	/* Extended: 00 followed by two length bytes. */
	if (n == 7) { /* case 2 extended */
		a->has_le = true;
		a->le = ((size_t)b[5] << 8 | b[6]);
		if (!a->le)
			a->le = 65536;
		return true;
	}
	if (n < 7)
		return false;
	a->lc = (size_t)b[5] << 8 | b[6];
	if (a->lc == 0)
		return false;
	if (n == 7 + a->lc)
		return a->data = b + 7, true;
	if (n == 9 + a->lc) {
		a->data = b + 7;
		a->has_le = true;
		a->le = (size_t)b[7 + a->lc] << 8 | b[8 + a->lc];
		if (!a->le)
			a->le = 65536;
		return true;
	}
	return false;
}

static LONG sw(uint8_t *resp, size_t *len, size_t at, uint16_t word)
{
	resp[at] = (uint8_t)(word >> 8);
	resp[at + 1] = (uint8_t)word;
	*len = at + 2;
	return SCARD_S_SUCCESS;
}

static bool is_transparent(uint16_t fid)
{
	return fid == FID_HELLO || fid == FID_BIG;
}

static size_t file_size(uint16_t fid)
{
	return fid == FID_HELLO ? sizeof(hello) - 1 : fid == FID_BIG ? BIG_SIZE : 0;
}

static uint8_t file_byte(uint16_t fid, size_t off)
{
	return fid == FID_HELLO ? (uint8_t)hello[off] : (uint8_t)(off & 0xFF);
}

/* FCP template (ISO/IEC 7816-4 7.4.3): size, descriptor, identifier. */
static size_t fcp(uint16_t fid, uint8_t *out)
{
	size_t n = 0;
	out[n++] = 0x62;
	out[n++] = 0; /* length, patched below */
	if (is_transparent(fid)) {
		size_t sz = file_size(fid);
		out[n++] = 0x80, out[n++] = 2, out[n++] = (uint8_t)(sz >> 8), out[n++] = (uint8_t)sz;
		out[n++] = 0x82, out[n++] = 1, out[n++] = 0x01; /* working EF, transparent */
	} else {
		out[n++] = 0x82, out[n++] = 1, out[n++] = 0x38; /* DF */
	}
	out[n++] = 0x83, out[n++] = 2, out[n++] = (uint8_t)(fid >> 8), out[n++] = (uint8_t)fid;
	out[1] = (uint8_t)(n - 2);
	return n;
}

static LONG do_select(struct democard_state *s, const struct apdu *a, uint8_t *resp,
                      size_t *len, size_t cap)
{
	uint16_t target = 0;
	if (a->p2 != 0x00 && a->p2 != 0x04 && a->p2 != 0x0C)
		return sw(resp, len, 0, 0x6A86);
	if (a->p1 == 0x04) { /* by DF name */
		if (a->lc != sizeof(demo_aid) || memcmp(a->data, demo_aid, sizeof(demo_aid)) != 0)
			return sw(resp, len, 0, 0x6A82);
		target = FID_DF;
	} else if (a->p1 == 0x00) { /* by file identifier */
		if (a->lc == 0) {
			target = FID_MF;
		} else if (a->lc != 2) {
			return sw(resp, len, 0, 0x6700);
		} else {
			uint16_t fid = (uint16_t)(a->data[0] << 8 | a->data[1]);
			uint16_t df = s->current == FID_DF || s->current == FID_BIG ? FID_DF : FID_MF;
			if (fid == FID_MF)
				target = FID_MF;
			else if (fid == FID_DF || (fid == FID_HELLO && df == FID_MF) ||
			         (fid == FID_BIG && df == FID_DF))
				target = fid;
			else
				return sw(resp, len, 0, 0x6A82);
		}
	} else {
		return sw(resp, len, 0, 0x6A86);
	}
	s->current = target;
	if (a->p2 == 0x0C)
		return sw(resp, len, 0, 0x9000);
	uint8_t tmp[32];
	size_t n = fcp(target, tmp);
	if (a->has_le && a->le < n)
		n = a->le;
	if (n + 2 > cap)
		return SCARD_E_INSUFFICIENT_BUFFER;
	memcpy(resp, tmp, n);
	return sw(resp, len, n, 0x9000);
}

static LONG do_read(struct democard_state *s, const struct apdu *a, uint8_t *resp, size_t *len,
                    size_t cap)
{
	if (a->p1 & 0x80) /* short EF identifier addressing: not offered */
		return sw(resp, len, 0, 0x6A81);
	if (!is_transparent(s->current))
		return sw(resp, len, 0, 0x6986);
	if (a->lc || !a->has_le)
		return sw(resp, len, 0, 0x6700);
	size_t off = (size_t)a->p1 << 8 | a->p2;
	size_t size = file_size(s->current);
	if (off >= size)
		return sw(resp, len, 0, 0x6B00);
	size_t n = a->le;
	uint16_t word = 0x9000;
	if (n > size - off) {
		n = size - off;
		word = 0x6282; /* end of file reached before Le bytes */
	}
	if (n + 2 > cap)
		return SCARD_E_INSUFFICIENT_BUFFER;
	for (size_t i = 0; i < n; i++)
		resp[i] = file_byte(s->current, off + i);
	return sw(resp, len, n, word);
}

static LONG do_verify(struct democard_state *s, const struct apdu *a, uint8_t *resp, size_t *len)
{
	if (a->p1 != 0x00 || a->p2 != 0x81)
		return sw(resp, len, 0, 0x6A86);
	if (s->tries_left == 0)
		return sw(resp, len, 0, 0x6983);
	if (a->lc == 0) /* status query */
		return sw(resp, len, 0, s->verified ? 0x9000 : (uint16_t)(0x63C0 | s->tries_left));
	if (a->lc == sizeof(pin) && memcmp(a->data, pin, sizeof(pin)) == 0) {
		s->tries_left = PIN_TRIES;
		s->verified = true;
		return sw(resp, len, 0, 0x9000);
	}
	s->verified = false;
	s->tries_left--;
	return sw(resp, len, 0, s->tries_left ? (uint16_t)(0x63C0 | s->tries_left) : 0x6983);
}

static LONG democard_apdu(void *user, const uint8_t *cmd, size_t n, uint8_t *resp, size_t *len)
{
	struct democard_state *s = user;
	size_t cap = *len;
	struct apdu a;

	if (cap < 2)
		return SCARD_E_INSUFFICIENT_BUFFER;
	if (!s->initialised) {
		s->initialised = true;
		s->tries_left = PIN_TRIES;
	}
	if (!parse_apdu(cmd, n, &a))
		return sw(resp, len, 0, 0x6700);
	if (a.cla != 0x00)
		return sw(resp, len, 0, 0x6E00);
	switch (a.ins) {
	case 0xA4:
		return do_select(s, &a, resp, len, cap);
	case 0xB0:
		return do_read(s, &a, resp, len, cap);
	case 0x20:
		return do_verify(s, &a, resp, len);
	case 0xC0: /* nothing is ever left pending */
		return sw(resp, len, 0, 0x6985);
	case 0x84: {
		if (a.lc || !a.has_le || a.le > 256)
			return sw(resp, len, 0, 0x6700);
		if (a.le + 2 > cap)
			return SCARD_E_INSUFFICIENT_BUFFER;
		for (size_t i = 0; i < a.le; i++) {
			/* Deterministic, so tests can check it; not a random number. */
			s->challenge = s->challenge * 1103515245u + 12345u;
			resp[i] = (uint8_t)(s->challenge >> 16);
		}
		return sw(resp, len, a.le, 0x9000);
	}
	default:
		return sw(resp, len, 0, 0x6D00);
	}
}

static void democard_reset(void *user)
{
	struct democard_state *s = user;
	if (!s->initialised) {
		s->initialised = true;
		s->tries_left = PIN_TRIES;
	}
	/* A reset forgets the selection and the verified PIN, not the try counter. */
	s->current = 0;
	s->verified = false;
}

static const struct calais_sim_card democard = {
	.atr = demo_atr,
	.atr_len = sizeof(demo_atr),
	.apdu = democard_apdu,
	.reset = democard_reset,
	.state_size = sizeof(struct democard_state),
};

const struct calais_sim_card *calais_sim_democard(void)
{
	return &democard;
}
