/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* ATR parsing (ISO/IEC 7816-3:2006 clause 8): conventions, interface bytes, historical
 * bytes, TCK, and the parameters they give (Fi/Di/fmax, N, WI, IFSC, BWI/CWI, EDC, clock
 * stop, class); plus the protocol choice the core makes from them. No I/O. */
#include "calais-internal.h"

#include <stdarg.h>
#include <stdio.h>

/* Table 7: Fi and fmax (kHz) by TA1's high nibble; 0 marks a reserved value. */
static const uint16_t fi_table[16] = { 372, 372, 558, 744, 1116, 1488, 1860, 0,
	                               0,   512, 768, 1024, 1536, 2048, 0,    0 };
static const uint16_t fmax_table[16] = { 4000, 5000, 6000, 8000, 12000, 16000, 20000, 0,
	                                 0,    5000, 7500, 10000, 15000, 20000, 0,     0 };
/* Table 8: Di by TA1's low nibble. */
static const uint8_t di_table[16] = { 0, 1, 2, 4, 8, 16, 32, 64, 12, 20, 0, 0, 0, 0, 0, 0 };

uint16_t calais__atr_fi(uint8_t index)
{
	return fi_table[index & 15];
}

uint8_t calais__atr_di(uint8_t index)
{
	return di_table[index & 15];
}

uint8_t calais__atr_inverse_byte(uint8_t b)
{
	/* Inverse convention: state Z is 0 and the most significant bit comes first, so a
	 * byte read with the direct convention is complemented and bit-reversed. */
	b = (uint8_t)~b;
	b = (uint8_t)((b & 0xF0) >> 4 | (b & 0x0F) << 4);
	b = (uint8_t)((b & 0xCC) >> 2 | (b & 0x33) << 2);
	b = (uint8_t)((b & 0xAA) >> 1 | (b & 0x55) << 1);
	return b;
}

size_t calais__atr_expected(const uint8_t *b, size_t n)
{
	/* Walks the interface bytes as far as they have arrived: each TD says which of the
	 * next group's bytes follow, and whether TCK ends the ATR (8.2). */
	if (n < 2)
		return 2;
	size_t need = 2;
	uint8_t y = b[1] >> 4;
	bool tck = false;
	for (;;) {
		need += (size_t)((y & 1) + (y >> 1 & 1) + (y >> 2 & 1) + (y >> 3 & 1));
		if (!(y & 0x8))
			break;
		if (need > MAX_ATR_SIZE + 1)
			return need;
		if (need > n)
			return need; /* TD not read yet */
		uint8_t td = b[need - 1];
		if ((td & 0x0F) != 0)
			tck = true;
		y = td >> 4;
	}
	return need + (b[1] & 0x0F) + (tck ? 1 : 0);
}

static LONG fail(struct calais__atr *a, const char *reason)
{
	a->reason = reason;
	return SCARD_E_INVALID_ATR;
}

LONG calais__atr_parse(const uint8_t *in, size_t len, struct calais__atr *a)
{
	memset(a, 0, sizeof(*a));
	a->reason = "";
	/* The defaults first: a card whose ATR fails a check below may still be used (see
	 * calais__atr_protocols), and must then run with sane parameters. */
	a->fi_index = a->di_index = 1;
	a->fi = 372;
	a->di = 1;
	a->fmax_khz = fmax_table[1];
	a->wi = 10;
	a->ifsc = 32;
	a->bwi = 4;
	a->cwi = 13;
	if (!in || len == 0)
		return fail(a, "empty ATR");
	if (len > MAX_ATR_SIZE)
		return fail(a, "longer than 33 bytes");
	memcpy(a->raw, in, len);
	a->len = len;

	/* 03 is TS = 3F read with the direct convention (a character-level reader that did
	 * not convert): decode every byte. */
	if (a->raw[0] == 0x03) {
		for (size_t i = 0; i < len; i++)
			a->raw[i] = calais__atr_inverse_byte(a->raw[i]);
		a->converted = true;
	}
	if (a->raw[0] == 0x3F)
		a->inverse = true;
	else if (a->raw[0] != 0x3B)
		return fail(a, "TS is neither 3B (direct) nor 3F (inverse convention)");
	if (len < 2)
		return fail(a, "T0 missing");

	const uint8_t *b = a->raw;
	size_t i = 1;
	uint8_t y = b[i] >> 4;
	a->hist_len = b[i] & 0x0F;
	i++;
	bool t_other_than_0 = false;
	for (unsigned g = 1;; g++) {
		if (g > CALAIS__ATR_MAX_GROUPS)
			return fail(a, "too many interface byte groups");
		struct calais__atr_group *grp = &a->groups[g - 1];
		a->n_groups = g;
		for (unsigned k = 0; k < 4; k++) {
			if (!(y & (1u << k)))
				continue;
			if (i >= len)
				return fail(a, "truncated in the interface bytes");
			grp->present |= (uint8_t)(1u << k);
			grp->byte[k] = b[i++];
		}
		if (!(y & 0x8))
			break;
		uint8_t td = grp->byte[3];
		unsigned t = td & 0x0F;
		/* TD1 names the first protocol; TD2 onwards may name T=15 for global bytes. */
		if (g == 1)
			a->first_protocol = (uint8_t)t;
		if (t == 15 && g == 1)
			return fail(a, "TD1 indicates T=15");
		a->protocols |= (uint16_t)(1u << t);
		if (t != 0)
			t_other_than_0 = true;
		grp->t_next = (uint8_t)t;
		y = td >> 4;
	}
	if (!(a->protocols & ~(1u << 15)))
		a->protocols |= 1; /* no TD1, or only T=15: T=0 */
	if (!(a->groups[0].present & 0x8))
		a->first_protocol = 0;
	if (a->n_groups >= 2 && (a->groups[1].present & 1)) {
		uint8_t ta2 = a->groups[1].byte[0];
		a->specific = true;
		a->specific_protocol = ta2 & 0x0F;
		a->specific_changeable = !(ta2 & 0x80);
		a->specific_implicit = (ta2 & 0x10) != 0;
	}
	/* What follows can still be wrong, but the protocols are known. */
	a->interface_ok = true;

	/* The parameters, all read even when one is wrong (the first wrong one is the
	 * reason given): a card may be used all the same. */
	const char *bad = NULL;
	const struct calais__atr_group *g1 = &a->groups[0], *g2 = &a->groups[1];
	a->ta1_present = g1->present & 1;
	if (a->ta1_present) {
		uint8_t ta1 = g1->byte[0];
		if (!fi_table[ta1 >> 4])
			bad = bad ? bad : "TA1 uses a reserved Fi value";
		else if (!di_table[ta1 & 0x0F])
			bad = bad ? bad : "TA1 uses a reserved Di value";
		else {
			a->fi_index = ta1 >> 4;
			a->di_index = ta1 & 0x0F;
			a->fi = fi_table[a->fi_index];
			a->fmax_khz = fmax_table[a->fi_index];
			a->di = di_table[a->di_index];
		}
	}
	/* TB1 and PI1/VPP are deprecated (8.3); ignored as the standard asks. */
	a->n = (g1->present & 4) ? g1->byte[2] : 0;
	/* T=0 waiting integer: TC2. */
	if (a->n_groups >= 2 && (g2->present & 4)) {
		if (g2->byte[2] == 0)
			bad = bad ? bad : "TC2 (WI) is zero";
		else
			a->wi = g2->byte[2];
	}

	/* T=1 and T=15 specific bytes: the first TA/TB/TC after a TD naming them. */
	bool t1_ta = false, t1_tb = false, t1_tc = false, t15_ta = false, t15_tb = false;
	for (unsigned g = 2; g <= a->n_groups; g++) {
		unsigned t = a->groups[g - 2].t_next;
		const struct calais__atr_group *grp = &a->groups[g - 1];
		if (t == 1 && g >= 3) {
			if ((grp->present & 1) && !t1_ta) {
				t1_ta = true;
				/* 00 and FF are not sizes: 32 and 254 if the card is used all the
				 * same (as libccid does for FF). */
				a->ifsc = calais__t1_ifs(grp->byte[0]);
				if (grp->byte[0] == 0 || grp->byte[0] == 0xFF)
					bad = bad ? bad : "IFSC (TA for T=1) is 00 or FF";
			}
			if ((grp->present & 2) && !t1_tb) {
				t1_tb = true;
				a->bwi = grp->byte[1] >> 4;
				a->cwi = grp->byte[1] & 0x0F;
				if (a->bwi > 9)
					bad = bad ? bad : "BWI (TB for T=1) above 9";
			}
			if ((grp->present & 4) && !t1_tc) {
				t1_tc = true;
				a->edc_crc = grp->byte[2] & 1;
			}
		} else if (t == 15) {
			if ((grp->present & 1) && !t15_ta) {
				t15_ta = true;
				a->clock_stop = grp->byte[0] >> 6;
				a->class_indicator = grp->byte[0] & 0x3F;
			}
			if ((grp->present & 2) && !t15_tb) {
				t15_tb = true;
				a->spu = grp->byte[1];
			}
		}
	}

	if (i + a->hist_len > len)
		return fail(a, "truncated in the historical bytes");
	a->hist_offset = i;
	i += a->hist_len;

	/* TCK is present when any protocol other than T=0 is indicated (8.2.5). */
	if (t_other_than_0) {
		if (i >= len)
			return fail(a, "TCK missing (required when a protocol other than T=0 is indicated)");
		a->has_tck = true;
		a->tck = b[i];
		uint8_t x = 0;
		for (size_t k = 1; k <= i; k++)
			x ^= b[k];
		if (x != 0)
			bad = bad ? bad : "TCK mismatch (XOR of T0 to TCK is not zero)";
		i++;
	} else if (i + 1 == len) {
		/* Some T=0 cards send a TCK they need not send; note it, do not reject. */
		a->has_tck = true;
		a->tck = b[i];
		a->unexpected_tck = true;
		i++;
	}
	if (i != len)
		return fail(a, "extra bytes after the ATR's end");

	return bad ? fail(a, bad) : SCARD_S_SUCCESS;
}

LONG calais__atr_protocols(const uint8_t *atr, size_t len, struct calais__atr_info *out)
{
	struct calais__atr a;
	memset(out, 0, sizeof(*out));
	LONG rv = calais__atr_parse(atr, len, &a);
	/* Real cards send bad TCKs, reserved values and stray bytes (pcsc-tools' list has
	 * dozens): the protocols are still usable once the interface bytes could be read,
	 * as libccid also lets them through. */
	if (rv != SCARD_S_SUCCESS && !a.interface_ok)
		return rv;
	if (rv != SCARD_S_SUCCESS)
		calais__warn("ATR: %s; using the protocols it names", a.reason);
	if (a.protocols & 1)
		out->protocols |= SCARD_PROTOCOL_T0;
	if (a.protocols & 2)
		out->protocols |= SCARD_PROTOCOL_T1;
	if (!out->protocols)
		return SCARD_E_INVALID_ATR; /* only protocols no reader here runs */
	out->default_proto = a.first_protocol == 1 ? SCARD_PROTOCOL_T1 : SCARD_PROTOCOL_T0;
	if (!(out->protocols & out->default_proto))
		out->default_proto = out->protocols & SCARD_PROTOCOL_T0 ? SCARD_PROTOCOL_T0
		                                                        : SCARD_PROTOCOL_T1;
	if (a.specific) {
		out->specific = true;
		out->specific_proto = a.specific_protocol == 1 ? SCARD_PROTOCOL_T1 : SCARD_PROTOCOL_T0;
	}
	return SCARD_S_SUCCESS;
}

/* ---- human-readable decoding -------------------------------------------------------- */

struct out {
	char *buf;
	size_t cap, len;
};

static void put(struct out *o, const char *fmt, ...) CALAIS__PRINTF(2, 3);
static void put(struct out *o, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	size_t room = o->len < o->cap ? o->cap - o->len : 0;
	int n = vsnprintf(room ? o->buf + o->len : NULL, room, fmt, ap);
	va_end(ap);
	if (n > 0)
		o->len += (size_t)n;
}

static const char *const class_names[] = { "A (5 V)", "B (3 V)", "C (1.8 V)" };
static const char *const clock_stop_names[] = { "not supported", "state L", "state H",
	                                        "no preference" };

LONG calais_atr_describe(const uint8_t *atr, size_t len, char *buf, size_t cap)
{
	struct calais__atr a;
	struct out o = { buf, cap, 0 };
	if (buf && cap)
		buf[0] = '\0';
	LONG rv = calais__atr_parse(atr, len, &a);
	if (rv != SCARD_S_SUCCESS) {
		put(&o, "invalid ATR: %s\n", a.reason);
		return rv;
	}
	put(&o, "TS = %02X: %s convention%s\n", a.raw[0], a.inverse ? "inverse" : "direct",
	    a.converted ? " (decoded from 03)" : "");
	put(&o, "T0 = %02X: %zu historical byte(s)\n", a.raw[1], a.hist_len);
	for (unsigned g = 1; g <= a.n_groups; g++) {
		const struct calais__atr_group *grp = &a.groups[g - 1];
		static const char names[4] = { 'A', 'B', 'C', 'D' };
		for (unsigned k = 0; k < 4; k++)
			if (grp->present & (1u << k))
				put(&o, "T%c%u = %02X%s\n", names[k], g, grp->byte[k],
				    k == 3 ? "" : "");
	}
	put(&o, "Fi = %u, Di = %u, fmax = %u.%u MHz%s\n", a.fi, a.di, a.fmax_khz / 1000,
	    (a.fmax_khz % 1000) / 100, a.ta1_present ? "" : " (defaults)");
	put(&o, "Extra guard time N = %u%s\n", a.n, a.n == 255 ? " (minimum: 12 etu, or 11 for T=1)" : "");
	put(&o, "Protocols offered:");
	for (unsigned t = 0; t < 16; t++)
		if ((a.protocols & (1u << t)) && t != 15)
			put(&o, " T=%u", t);
	put(&o, " (first: T=%u)\n", a.first_protocol);
	if (a.specific)
		put(&o, "Specific mode: T=%u, %s, parameters %s\n", a.specific_protocol,
		    a.specific_changeable ? "changeable" : "not changeable",
		    a.specific_implicit ? "implicit" : "from TA1");
	else
		put(&o, "Negotiable mode (PPS possible)\n");
	if (a.protocols & 1)
		put(&o, "T=0: WI = %u\n", a.wi);
	if (a.protocols & 2)
		put(&o, "T=1: IFSC = %u, BWI = %u, CWI = %u, EDC = %s\n", a.ifsc, a.bwi, a.cwi,
		    a.edc_crc ? "CRC" : "LRC");
	if (a.protocols & (1u << 15)) {
		put(&o, "Clock stop: %s\n", clock_stop_names[a.clock_stop]);
		put(&o, "Classes:");
		for (unsigned c = 0; c < 3; c++)
			if (a.class_indicator & (1u << c))
				put(&o, " %s", class_names[c]);
		put(&o, "\n");
	}
	put(&o, "Historical bytes:");
	for (size_t k = 0; k < a.hist_len; k++)
		put(&o, " %02X", a.raw[a.hist_offset + k]);
	put(&o, "%s\n", a.hist_len ? "" : " none");
	if (a.has_tck)
		put(&o, "TCK = %02X%s\n", a.tck, a.unexpected_tck ? " (not required for T=0 only)" : " (correct)");
	if (o.len >= cap)
		return SCARD_E_INSUFFICIENT_BUFFER;
	return SCARD_S_SUCCESS;
}
