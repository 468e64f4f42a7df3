/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* PPS: requests built from the ATR and the reader's rates, answers accepted in full or
 * in part or refused, and the timing parameters that result. */
#include <criterion/criterion.h>

#include "iso7816/iso7816.h"

static struct calais__atr atr(const uint8_t *b, size_t n)
{
	struct calais__atr a;
	cr_assert_eq(calais__atr_parse(b, n, &a), SCARD_S_SUCCESS, "%s", a.reason);
	return a;
}

/* TA1 13 (Fi 372, Di 4), T=1, IFSC 254, BWI 4, CWI 5. */
static const uint8_t jcop[] = { 0x3B, 0xFA, 0x13, 0x00, 0x00, 0x81, 0x31, 0xFE, 0x45, 0x4A, 0x43,
	                        0x4F, 0x50, 0x34, 0x31, 0x56, 0x32, 0x32, 0x31, 0x96 };

Test(pps, request_from_ta1)
{
	struct calais__atr a = atr(jcop, sizeof(jcop));
	struct calais__pps_caps caps = { .clock_khz = 4000 };
	uint8_t req[4];
	size_t n;
	struct calais__pps_result r;
	cr_assert_eq(calais__pps_request(&a, 1, &caps, req, &n, &r), SCARD_S_SUCCESS);
	cr_assert_eq(n, 4);
	cr_assert_eq(req[0], 0xFF);
	cr_assert_eq(req[1], 0x11);
	cr_assert_eq(req[2], 0x13);
	cr_assert_eq(req[3], 0xFF ^ 0x11 ^ 0x13);
	cr_assert_eq(r.di, 4);
	cr_assert_eq(r.rate_bps, 43010); /* 4 MHz x 4 / 372 */
	cr_assert_eq(r.ifsc, 254);
	/* BWT = 11 etu + 2^4 x 960 x 372 / 4 MHz = 1428.5 ms + 0.26 ms. */
	cr_assert_eq(r.wt_ms, 1429);
	cr_assert_eq(r.cwt_ms, 1); /* (11 + 32) etu of 23.25 us */
}

Test(pps, reader_rates_step_di_down)
{
	struct calais__atr a = atr(jcop, sizeof(jcop));
	static const uint32_t rates[] = { 10752, 21505 }; /* Di 1 and 2 at 4 MHz */
	struct calais__pps_caps caps = { .clock_khz = 4000, .rates_bps = rates, .n_rates = 2 };
	uint8_t req[4];
	size_t n;
	struct calais__pps_result r;
	cr_assert_eq(calais__pps_request(&a, 1, &caps, req, &n, &r), SCARD_S_SUCCESS);
	cr_assert_eq(n, 4);
	cr_assert_eq(req[2], 0x12, "Di 2, the fastest the reader lists");
	/* A reader running only the default rate: no PPS1, and T=1 is the first protocol. */
	static const uint32_t slow[] = { 10752 };
	caps.rates_bps = slow;
	caps.n_rates = 1;
	cr_assert_eq(calais__pps_request(&a, 1, &caps, req, &n, &r), SCARD_S_SUCCESS);
	cr_assert_eq(n, 0, "defaults need no PPS");
	cr_assert_eq(r.di, 1);
}

Test(pps, other_protocol_needs_pps)
{
	/* T=0 first, T=1 offered, no TA1: PPS only to change the protocol. */
	static const uint8_t b[] = { 0x3B, 0x80, 0x80, 0x01, 0x01 };
	struct calais__atr a = atr(b, sizeof(b));
	struct calais__pps_caps caps = { 0 };
	uint8_t req[4];
	size_t n;
	struct calais__pps_result r;
	cr_assert_eq(calais__pps_request(&a, 0, &caps, req, &n, &r), SCARD_S_SUCCESS);
	cr_assert_eq(n, 0);
	cr_assert_eq(r.wt_ms, 893, "WT = 10 x 960 x 372 / 4 MHz = 892.8 ms");
	cr_assert_eq(calais__pps_request(&a, 1, &caps, req, &n, &r), SCARD_S_SUCCESS);
	cr_assert_eq(n, 3);
	cr_assert_eq(req[1], 0x01);
	cr_assert_eq(req[2], 0xFF ^ 0x01);
	static const uint8_t t0only[] = { 0x3B, 0x02, 0x14, 0x50 };
	struct calais__atr c = atr(t0only, sizeof(t0only));
	cr_assert_eq(calais__pps_request(&c, 1, &caps, req, &n, &r), SCARD_E_PROTO_MISMATCH);
}

Test(pps, specific_mode)
{
	/* TA1 96, TA2 81: specific T=1 with TA1's Fi 512 / Di 32: no PPS. */
	uint8_t b[8] = { 0x3B, 0x90, 0x96, 0x91, 0x81, 0x41, 0x01 };
	for (int i = 1; i < 7; i++)
		b[7] ^= b[i];
	struct calais__atr a = atr(b, 8);
	struct calais__pps_caps caps = { .clock_khz = 4000 };
	uint8_t req[4];
	size_t n;
	struct calais__pps_result r;
	cr_assert_eq(calais__pps_request(&a, 1, &caps, req, &n, &r), SCARD_S_SUCCESS);
	cr_assert_eq(n, 0);
	cr_assert_eq(r.fi, 512);
	cr_assert_eq(r.di, 32);
	cr_assert(r.edc_crc);
	cr_assert_eq(calais__pps_request(&a, 0, &caps, req, &n, &r), SCARD_E_PROTO_MISMATCH);
	caps.max_rate_bps = 100000; /* 4 MHz x 32 / 512 = 250 kbps: too fast */
	cr_assert_eq(calais__pps_request(&a, 1, &caps, req, &n, &r), SCARD_E_READER_UNSUPPORTED);
}

Test(pps, answers)
{
	struct calais__atr a = atr(jcop, sizeof(jcop));
	const uint8_t req[] = { 0xFF, 0x11, 0x13, 0xFF ^ 0x11 ^ 0x13 };
	struct calais__pps_result r;
	/* Echo: accepted. */
	cr_assert_eq(calais__pps_check(req, 4, req, 4, &a, 4000, &r), SCARD_S_SUCCESS);
	cr_assert_eq(r.di, 4);
	/* Partial: PPS1 left out, the card keeps Fd/Dd. */
	const uint8_t partial[] = { 0xFF, 0x01, 0xFE };
	cr_assert_eq(calais__pps_check(req, 4, partial, 3, &a, 4000, &r), SCARD_S_SUCCESS);
	cr_assert_eq(r.di, 1);
	cr_assert_eq(r.fi, 372);
	/* Another protocol: refused. */
	const uint8_t other[] = { 0xFF, 0x10, 0x13, 0xFF ^ 0x10 ^ 0x13 };
	cr_assert_eq(calais__pps_check(req, 4, other, 4, &a, 4000, &r), SCARD_E_PROTO_MISMATCH);
	/* Malformed: bad PCK, other PPS1, wrong length, bad PPSS, reserved bit 8. */
	const uint8_t badpck[] = { 0xFF, 0x11, 0x13, 0x00 };
	cr_assert_eq(calais__pps_check(req, 4, badpck, 4, &a, 4000, &r), SCARD_F_COMM_ERROR);
	const uint8_t otherdi[] = { 0xFF, 0x11, 0x12, 0xFF ^ 0x11 ^ 0x12 };
	cr_assert_eq(calais__pps_check(req, 4, otherdi, 4, &a, 4000, &r), SCARD_F_COMM_ERROR);
	cr_assert_eq(calais__pps_check(req, 4, req, 3, &a, 4000, &r), SCARD_F_COMM_ERROR);
	const uint8_t ppss[] = { 0xFE, 0x11, 0x13, 0xFE ^ 0x11 ^ 0x13 };
	cr_assert_eq(calais__pps_check(req, 4, ppss, 4, &a, 4000, &r), SCARD_F_COMM_ERROR);
	const uint8_t b8[] = { 0xFF, 0x91, 0x13, 0xFF ^ 0x91 ^ 0x13 };
	cr_assert_eq(calais__pps_check(req, 4, b8, 4, &a, 4000, &r), SCARD_F_COMM_ERROR);
}
