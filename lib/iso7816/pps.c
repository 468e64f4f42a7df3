/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Protocol and parameter selection (ISO/IEC 7816-3:2006 clause 9): PPS request from the
 * ATR and what the reader can do, validation of the card's answer, and the timing
 * parameters that result, handed to the transport. No I/O. */
#include "calais-internal.h"

/* Rate in bits per second for a clock (kHz) and Fi/Di. */
static uint32_t rate_bps(uint32_t clock_khz, uint16_t fi, uint8_t di)
{
	return (uint32_t)((uint64_t)clock_khz * 1000u * di / fi);
}

static bool rate_supported(const struct calais__pps_caps *caps, uint32_t bps)
{
	if (caps->max_rate_bps && bps > caps->max_rate_bps)
		return false;
	if (!caps->n_rates)
		return true;
	/* CCID readers list exact rates; allow the rounding of a 1% clock spread. */
	for (size_t i = 0; i < caps->n_rates; i++) {
		uint32_t r = caps->rates_bps[i];
		if (bps >= r - r / 100 && bps <= r + r / 100)
			return true;
	}
	return false;
}

void calais__pps_params(const struct calais__atr *a, uint8_t protocol, uint8_t fi_index,
                        uint8_t di_index, uint32_t clock_khz, struct calais__pps_result *out)
{
	memset(out, 0, sizeof(*out));
	out->protocol = protocol;
	out->fi_index = fi_index;
	out->di_index = di_index;
	/* Reserved values fall back to the defaults (Fd 372, Dd 1). */
	out->fi = calais__atr_fi(fi_index) ? calais__atr_fi(fi_index) : 372;
	out->di = calais__atr_di(di_index) ? calais__atr_di(di_index) : 1;
	out->clock_khz = clock_khz ? clock_khz : 4000;
	/* etu = Fi / (Di f), in nanoseconds. */
	out->etu_ns = (uint32_t)((uint64_t)out->fi * 1000000u / ((uint64_t)out->di * out->clock_khz));
	out->guard_n = a->n;
	out->rate_bps = rate_bps(out->clock_khz, out->fi, out->di);
	if (protocol == 0) {
		/* WT = WI x 960 x Fi / f (10.2). */
		uint64_t wt_us = (uint64_t)a->wi * 960u * out->fi * 1000u / out->clock_khz;
		out->wt_ms = (uint32_t)((wt_us + 999) / 1000);
	} else {
		out->ifsc = calais__t1_ifs(a->ifsc);
		out->edc_crc = a->edc_crc;
		out->bwi = a->bwi;
		out->cwi = a->cwi;
		/* CWT = (11 + 2^CWI) etu; BWT = 11 etu + 2^BWI x 960 x 372 / f (11.4.3). */
		uint64_t cwt_ns = (11u + (1u << a->cwi)) * (uint64_t)out->etu_ns;
		uint64_t bwt_us = 11u * (uint64_t)out->etu_ns / 1000u +
		                  ((uint64_t)1 << a->bwi) * 960u * 372u * 1000u / out->clock_khz;
		out->cwt_ms = (uint32_t)((cwt_ns + 999999) / 1000000);
		out->wt_ms = (uint32_t)((bwt_us + 999) / 1000);
	}
}

LONG calais__pps_request(const struct calais__atr *a, uint8_t protocol,
                         const struct calais__pps_caps *caps, uint8_t req[4], size_t *req_len,
                         struct calais__pps_result *result)
{
	uint32_t clock = caps->clock_khz ? caps->clock_khz : 4000;
	*req_len = 0;
	if (protocol > 1 || !(a->protocols & (1u << protocol)))
		return SCARD_E_PROTO_MISMATCH;
	if (a->specific) {
		/* Specific mode: no PPS; the protocol is TA2's, the parameters TA1's unless
		 * TA2 says implicit. */
		if (a->specific_protocol != protocol)
			return SCARD_E_PROTO_MISMATCH;
		uint8_t fi = a->specific_implicit ? 1 : a->fi_index, di = a->specific_implicit ? 1 : a->di_index;
		calais__pps_params(a, protocol, fi, di, clock, result);
		if (!rate_supported(caps, result->rate_bps))
			return SCARD_E_READER_UNSUPPORTED;
		return SCARD_S_SUCCESS;
	}
	/* Negotiable mode: the best of TA1 the reader can clock, stepping Di down. */
	uint8_t fi = a->fi_index, di = a->di_index;
	static const uint8_t di_order[] = { 7, 6, 9, 5, 8, 4, 3, 2, 1 }; /* 64 32 20 16 12 8 4 2 1 */
	bool found = false;
	struct calais__pps_result r;
	for (size_t k = 0; k < sizeof(di_order) && !found; k++) {
		if (calais__atr_di(di_order[k]) > calais__atr_di(di))
			continue;
		calais__pps_params(a, protocol, fi, di_order[k], clock, &r);
		if (rate_supported(caps, r.rate_bps)) {
			di = di_order[k];
			found = true;
		}
	}
	if (!found) {
		fi = 1;
		di = 1;
	}
	calais__pps_params(a, protocol, fi, di, clock, result);
	bool default_params = fi == 1 && di == 1;
	if (protocol == a->first_protocol && default_params && !caps->always_pps)
		return SCARD_S_SUCCESS; /* the defaults apply without PPS */
	size_t n = 0;
	req[n++] = 0xFF;
	req[n++] = (uint8_t)((default_params ? 0x00 : 0x10) | protocol);
	if (!default_params)
		req[n++] = (uint8_t)(fi << 4 | di);
	uint8_t pck = 0;
	for (size_t k = 0; k < n; k++)
		pck ^= req[k];
	req[n++] = pck;
	*req_len = n;
	return SCARD_S_SUCCESS;
}

LONG calais__pps_check(const uint8_t *req, size_t req_len, const uint8_t *resp, size_t resp_len,
                       const struct calais__atr *a, uint32_t clock_khz,
                       struct calais__pps_result *result)
{
	if (req_len < 3 || resp_len < 3 || resp_len > 6)
		return SCARD_F_COMM_ERROR;
	if (resp[0] != 0xFF)
		return SCARD_F_COMM_ERROR;
	/* Length implied by PPS0's presence bits (PPS1..PPS3), then PCK. */
	uint8_t pps0 = resp[1];
	size_t want = 2 + ((pps0 >> 4) & 1) + ((pps0 >> 5) & 1) + ((pps0 >> 6) & 1) + 1;
	if (pps0 & 0x80 || resp_len != want)
		return SCARD_F_COMM_ERROR;
	uint8_t x = 0;
	for (size_t k = 0; k < resp_len; k++)
		x ^= resp[k];
	if (x != 0)
		return SCARD_F_COMM_ERROR;
	/* The protocol must be the one asked for; otherwise the card refused it. */
	if ((pps0 & 0x0F) != (req[1] & 0x0F))
		return SCARD_E_PROTO_MISMATCH;
	uint8_t fi = 1, di = 1;
	if (pps0 & 0x10) {
		/* PPS1 echoed: it must be the value asked for. */
		if (!(req[1] & 0x10) || resp[2] != req[2])
			return SCARD_F_COMM_ERROR;
		fi = resp[2] >> 4;
		di = resp[2] & 0x0F;
	}
	/* PPS1 absent in the answer: the card keeps Fd/Dd (partial acceptance). */
	calais__pps_params(a, req[1] & 0x0F, fi, di, clock_khz, result);
	return SCARD_S_SUCCESS;
}
