/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* One CCID slot over the message layer: power-up with the voltage class sequence,
 * presence, protocol selection (PPS, SetParameters, IFSD), APDU exchange at every level
 * the descriptor announces (extended APDU, short APDU, TPDU and character level through
 * the ISO 7816-3 engine) and the part 10 features (PIN verify/modify, properties,
 * escape). Shared by the USB and serial transports. */
#include "ccid.h"

#include <stdlib.h>

#define POWER_ON_TIMEOUT_MS 10000
#define DEFAULT_TIMEOUT_MS 3000

static void put_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Card status bits of a DataBlock that did not fail (QEMU answers an XfrBlock to an
 * empty or unpowered slot this way). */
static LONG icc_status(uint8_t status)
{
	switch (status & 3) {
	case 2: return SCARD_W_REMOVED_CARD;
	case 1: return SCARD_W_UNPOWERED_CARD;
	default: return SCARD_S_SUCCESS;
	}
}

/* One command of this slot, bounded by the slot's exchange deadline when one is set. */
static LONG cmd(struct calais__ccid_slot *s, uint8_t type, const uint8_t hdr[3],
                const uint8_t *data, size_t n, struct calais__ccid_reply *r, uint32_t timeout_ms)
{
	return calais__ccid_command_until(s->port, type, s->index, hdr, data, n, r, timeout_ms,
	                                  s->deadline_ms);
}

/* The engine's view of cancel (asked between its waits). */
static bool slot_cancelled(void *user)
{
	struct calais__ccid_slot *s = user;
	return s->port->cancel || s->port->cancel_slot[s->index];
}

/* ---- power ---------------------------------------------------------------------------- */

static LONG power_off_locked(struct calais__ccid_slot *s)
{
	struct calais__ccid_reply r;
	LONG rv = cmd(s, CALAIS__PC_ICC_POWER_OFF, NULL, NULL, 0,
	                               &r, DEFAULT_TIMEOUT_MS);
	s->powered = false;
	s->protocol = 0;
	return rv == SCARD_E_NO_SMARTCARD ? SCARD_S_SUCCESS : rv;
}

/* bPowerSelect values in ISO order (class C, B, then A) among those the reader has. */
static size_t voltage_sequence(const struct calais__ccid_slot *s, uint8_t seq[3])
{
	if (s->desc->features & 0x0C) {
		seq[0] = 0; /* automatic activation or voltage selection */
		return 1;
	}
	static const struct { uint8_t bit, select; } classes[] = { { 4, 3 }, { 2, 2 }, { 1, 1 } };
	size_t n = 0;
	for (size_t i = 0; i < 3; i++)
		if (s->desc->voltage_support & classes[i].bit)
			seq[n++] = classes[i].select;
	if (n == 0)
		seq[n++] = 0; /* nothing announced: let the reader choose */
	return n;
}

/* The ISO class the T=15 class indicator accepts for bPowerSelect (true when unknown). */
static bool class_accepted(const struct calais__atr *a, uint8_t select)
{
	if (!a->class_indicator || select == 0)
		return true;
	static const uint8_t bit[] = { 0, 1, 2, 4 }; /* 5 V = A, 3 V = B, 1.8 V = C */
	return (a->class_indicator & bit[select]) != 0;
}

LONG calais__ccid_power_on(struct calais__ccid_slot *s, bool warm, uint8_t *atr, size_t *atr_len)
{
	LONG rv = calais__ccid_enter(s->port, s->index, true);
	if (rv != SCARD_S_SUCCESS)
		return rv;
	uint8_t seq[3];
	size_t n_seq = voltage_sequence(s, seq);
	if (warm && s->powered) {
		/* IccPowerOn on a powered slot is the warm reset (CCID 1.1 6.1.1). */
		seq[0] = s->power_select;
		n_seq = 1;
	} else if (s->powered) {
		power_off_locked(s);
	}
	rv = SCARD_W_UNRESPONSIVE_CARD;
	for (size_t i = 0; i < n_seq; i++) {
		struct calais__ccid_reply r;
		uint8_t hdr[3] = { seq[i], 0, 0 };
		rv = cmd(s, CALAIS__PC_ICC_POWER_ON, hdr, NULL, 0, &r,
		                          POWER_ON_TIMEOUT_MS);
		if (rv == SCARD_S_SUCCESS && r.len == 0)
			rv = icc_status(r.status) != SCARD_S_SUCCESS ? SCARD_E_NO_SMARTCARD
			                                              : SCARD_W_UNRESPONSIVE_CARD;
		if (rv == SCARD_S_SUCCESS && r.len > MAX_ATR_SIZE) {
			ccid_warn("%s: ATR of %zu bytes", s->port->name, r.len);
			rv = SCARD_W_UNRESPONSIVE_CARD;
		}
		if (rv == SCARD_S_SUCCESS) {
			memcpy(atr, r.data, r.len);
			*atr_len = r.len;
			/* A malformed ATR is still the card's answer: the core decides. */
			if (calais__atr_parse(atr, r.len, &s->atr) != SCARD_S_SUCCESS)
				ccid_info("%s: ATR does not parse (%s)", s->port->name,
				          s->atr.reason ? s->atr.reason : "?");
			if (!class_accepted(&s->atr, seq[i]) && i + 1 < n_seq) {
				ccid_info("%s: the card's class indicator excludes bPowerSelect %u",
				          s->port->name, seq[i]);
				power_off_locked(s);
				rv = SCARD_W_UNRESPONSIVE_CARD;
				continue;
			}
			s->powered = true;
			s->power_select = seq[i];
			s->protocol = 0;
			s->timeout_ms = DEFAULT_TIMEOUT_MS;
			break;
		}
		if (rv != SCARD_W_UNRESPONSIVE_CARD && rv != SCARD_W_UNSUPPORTED_CARD)
			break; /* no card, device gone, cancelled: another voltage will not help */
		power_off_locked(s);
	}
	calais__ccid_leave(s->port);
	return rv;
}

LONG calais__ccid_power_off(struct calais__ccid_slot *s)
{
	LONG rv = calais__ccid_enter(s->port, s->index, true);
	if (rv != SCARD_S_SUCCESS)
		return rv;
	rv = power_off_locked(s);
	calais__ccid_leave(s->port);
	return rv;
}

static LONG slot_status(struct calais__ccid_slot *s, bool *present, bool wait)
{
	LONG rv = calais__ccid_enter(s->port, s->index, wait);
	if (rv != SCARD_S_SUCCESS)
		return rv;
	struct calais__ccid_reply r;
	rv = cmd(s, CALAIS__PC_GET_SLOT_STATUS, NULL, NULL, 0, &r, DEFAULT_TIMEOUT_MS);
	/* A failed GetSlotStatus still carries the card status bits (ICC_MUTE: no card). */
	if (rv == SCARD_S_SUCCESS || (r.type == CALAIS__RDR_SLOT_STATUS &&
	                              (rv == SCARD_E_NO_SMARTCARD || rv == SCARD_W_UNRESPONSIVE_CARD))) {
		*present = (r.status & 3) != 2;
		if (!*present)
			s->powered = false;
		rv = SCARD_S_SUCCESS;
	}
	calais__ccid_leave(s->port);
	return rv;
}

LONG calais__ccid_slot_status(struct calais__ccid_slot *s, bool *present)
{
	return slot_status(s, present, true);
}

LONG calais__ccid_slot_poll(struct calais__ccid_slot *s, bool *present)
{
	return slot_status(s, present, false);
}

/* ---- one XfrBlock, and the extended APDU chain ----------------------------------------- */

static LONG xfr_block(struct calais__ccid_slot *s, const uint8_t *tx, size_t n, uint16_t level,
                      uint8_t bwi, uint8_t *rx, size_t *rx_len, uint32_t timeout_ms,
                      uint8_t *chain)
{
	struct calais__ccid_reply r;
	uint8_t hdr[3] = { bwi, (uint8_t)level, (uint8_t)(level >> 8) };
	LONG rv = cmd(s, CALAIS__PC_XFR_BLOCK, hdr, tx, n, &r, timeout_ms);
	s->storm = r.storm;
	if (rv == SCARD_E_NO_SMARTCARD)
		rv = SCARD_W_REMOVED_CARD;
	if (rv != SCARD_S_SUCCESS)
		return rv;
	if (r.len == 0 && (rv = icc_status(r.status)) != SCARD_S_SUCCESS) {
		ccid_info("%s: XfrBlock answered by an empty block, card status %u", s->port->name,
		          r.status & 3);
		return rv;
	}
	if (chain)
		*chain = r.param;
	if (r.len > *rx_len) {
		*rx_len = r.len;
		return SCARD_E_INSUFFICIENT_BUFFER;
	}
	memcpy(rx, r.data, r.len);
	*rx_len = r.len;
	return SCARD_S_SUCCESS;
}

/* Extended APDU level (CCID 1.1 6.1.4, wLevelParameter): the command in chunks, the
 * answer reassembled; the whole answer is read even when it overflows rx. */
static LONG xfr_extended(struct calais__ccid_slot *s, const uint8_t *tx, size_t n, uint8_t *rx,
                         size_t *rx_len)
{
	size_t chunk = s->port->max_msg - CALAIS__CCID_HEADER;
	if (chunk > 65536)
		chunk = 65536;
	size_t off = 0;
	uint8_t param = 0;
	size_t cap = *rx_len, got = 0;
	LONG rv;
	uint8_t tmp[1];
	while (n - off > chunk) {
		uint16_t level = off == 0 ? 0x0001 : 0x0003;
		size_t none = sizeof(tmp);
		rv = xfr_block(s, tx + off, chunk, level, 0, tmp, &none, s->timeout_ms, NULL);
		if (rv == SCARD_E_INSUFFICIENT_BUFFER || (rv == SCARD_S_SUCCESS && none)) {
			ccid_warn("%s: data in the answer to a command chunk", s->port->name);
			return SCARD_F_COMM_ERROR;
		}
		if (rv != SCARD_S_SUCCESS)
			return rv;
		off += chunk;
	}
	uint16_t level = off == 0 ? 0x0000 : 0x0002;
	bool overflow = false;
	uint8_t *part = malloc(s->port->max_msg);
	if (!part)
		return SCARD_E_NO_MEMORY;
	for (unsigned blocks = 0;; blocks++) {
		size_t len = s->port->max_msg;
		rv = xfr_block(s, tx + off, n - off, level, 0, part, &len, s->timeout_ms, &param);
		if (rv != SCARD_S_SUCCESS)
			break;
		if (!overflow && got + len <= cap)
			memcpy(rx + got, part, len);
		else
			overflow = true;
		got += len;
		off = n; /* later blocks carry no command data */
		if (param != 0x01 && param != 0x03 && param != 0x10)
			break;
		if (blocks > 64 || got > 65538) {
			ccid_warn("%s: answer chain too long", s->port->name);
			rv = SCARD_F_COMM_ERROR;
			break;
		}
		level = 0x0010; /* "continue": empty XfrBlock asking for the next part */
	}
	free(part);
	if (rv != SCARD_S_SUCCESS)
		return rv;
	*rx_len = got;
	return overflow ? SCARD_E_INSUFFICIENT_BUFFER : SCARD_S_SUCCESS;
}

/* ---- the ISO 7816-3 engine's transports ------------------------------------------------ */

/* A reader's time-extension storm is no transmission error for the engine to retry
 * (it would only start another): it ends the exchange, with SCARD_F_COMM_ERROR once out
 * of the engine (calais__ccid_transmit). */
#define STORM_RV SCARD_E_COMM_DATA_LOST

static LONG engine_rv(const struct calais__ccid_slot *s, LONG rv)
{
	return s->storm ? STORM_RV : rv;
}

static LONG t0_tpdu(void *user, const uint8_t *tpdu, size_t n, uint8_t *resp, size_t *resp_len,
                    uint32_t timeout_ms)
{
	struct calais__ccid_slot *s = user;
	return engine_rv(s, xfr_block(s, tpdu, n, 0, 0, resp, resp_len, s->timeout_ms, NULL));
}

static LONG t1_xfer(void *user, const uint8_t *blk, size_t n, uint8_t *rx, size_t *rx_len,
                    uint32_t timeout_ms)
{
	struct calais__ccid_slot *s = user;
	/* A WTX multiplies the block waiting time: tell the reader (bBWI) and wait as long. */
	uint32_t bwt = s->t1.bwt_ms ? s->t1.bwt_ms : 1;
	uint32_t mult = timeout_ms / bwt;
	uint8_t bwi = mult > 1 ? (uint8_t)(mult > 255 ? 255 : mult) : 0;
	LONG rv = xfr_block(s, blk, n, 0, bwi, rx, rx_len, s->timeout_ms * (mult > 1 ? mult : 1),
	                    NULL);
	/* ICC_MUTE: the reader's BWT ran out without a block, which the engine answers with
	 * R-blocks, then RESYNCH (11.6.3.2); it says when the card is unresponsive. */
	if (rv == SCARD_W_UNRESPONSIVE_CARD)
		rv = SCARD_E_TIMEOUT;
	return engine_rv(s, rv);
}

/* Character level: bytes to send wait in s->chr until the next read, which sends them
 * with wLevelParameter = the number of bytes expected back. */
static LONG chr_send(void *user, const uint8_t *b, size_t n)
{
	struct calais__ccid_slot *s = user;
	if (s->chr_len + n > sizeof(s->chr))
		return SCARD_E_INSUFFICIENT_BUFFER;
	memcpy(s->chr + s->chr_len, b, n);
	s->chr_len += n;
	return SCARD_S_SUCCESS;
}

static LONG chr_recv(void *user, uint8_t *b, size_t n, uint32_t timeout_ms)
{
	struct calais__ccid_slot *s = user;
	size_t len = n;
	LONG rv = xfr_block(s, s->chr, s->chr_len, (uint16_t)n, 0, b, &len,
	                    timeout_ms > s->timeout_ms ? timeout_ms : s->timeout_ms, NULL);
	s->chr_len = 0;
	if (s->storm)
		return STORM_RV;
	if (rv == SCARD_W_UNRESPONSIVE_CARD)
		return SCARD_E_TIMEOUT;
	if (rv == SCARD_S_SUCCESS && len != n) {
		ccid_warn("%s: %zu bytes read at character level, %zu expected", s->port->name, len, n);
		return SCARD_F_COMM_ERROR;
	}
	return rv;
}

/* ---- protocol selection ------------------------------------------------------------------ */

static uint32_t exchange_timeout(const struct calais__pps_result *p)
{
	/* The reader times single characters out itself; the host only needs a bound for the
	 * whole answer, generous enough for a card that keeps asking for more time. */
	uint64_t t = (uint64_t)p->wt_ms * 10 + 1000;
	if (t < DEFAULT_TIMEOUT_MS)
		t = DEFAULT_TIMEOUT_MS;
	return t > 600000 ? 600000 : (uint32_t)t;
}

static LONG set_parameters(struct calais__ccid_slot *s, uint8_t proto)
{
	const struct calais__atr *a = &s->atr;
	const struct calais__pps_result *p = &s->params;
	uint8_t d[7];
	size_t n;
	d[0] = (uint8_t)(p->fi_index << 4 | p->di_index);
	if (proto == 0) {
		d[1] = a->inverse ? 0x02 : 0x00;
		d[2] = a->n;
		d[3] = a->wi;
		d[4] = 0;
		n = 5;
	} else {
		d[1] = (uint8_t)(0x10 | (a->edc_crc ? 1 : 0) | (a->inverse ? 2 : 0));
		d[2] = a->n;
		d[3] = (uint8_t)(a->bwi << 4 | (a->cwi & 0x0F));
		d[4] = 0;
		d[5] = calais__t1_ifs(a->ifsc);
		d[6] = 0;
		n = 7;
	}
	uint8_t hdr[3] = { proto, 0, 0 };
	struct calais__ccid_reply r;
	LONG rv = cmd(s, CALAIS__PC_SET_PARAMETERS, hdr, d, n, &r,
	                               DEFAULT_TIMEOUT_MS);
	if (rv == SCARD_E_INVALID_VALUE || rv == SCARD_E_UNSUPPORTED_FEATURE) {
		/* A parameter the reader cannot change, or no SetParameters at all: the reader
		 * keeps its own, which is what it announced. */
		ccid_info("%s: SetParameters refused (bError 0x%02X); reader keeps its parameters",
		          s->port->name, r.error);
		rv = SCARD_S_SUCCESS;
	}
	return rv;
}

LONG calais__ccid_set_protocol(struct calais__ccid_slot *s, uint32_t protocol)
{
	uint8_t proto = protocol == SCARD_PROTOCOL_T1 ? 1 : 0;
	uint32_t offered = s->desc->protocols & 3;
	if (offered && !(offered & (1u << proto))) {
		ccid_info("%s: the reader does not run T=%u", s->port->name, proto);
		return SCARD_E_PROTO_MISMATCH;
	}
	LONG rv = calais__ccid_enter(s->port, s->index, true);
	if (rv != SCARD_S_SUCCESS)
		return rv;
	const struct calais__atr *a = &s->atr;
	uint32_t clock = s->desc->default_clock_khz ? s->desc->default_clock_khz : 4000;
	if (!s->powered) {
		rv = SCARD_E_NO_SMARTCARD;
		goto out;
	}
	if (s->st->host_pps && !a->specific) {
		struct calais__pps_caps caps = {
			.clock_khz = clock,
			.max_rate_bps = s->desc->max_data_rate,
			.rates_bps = s->rates,
			.n_rates = s->n_rates,
		};
		uint8_t req[4], resp[8];
		size_t req_len = 0, resp_len = sizeof(resp);
		rv = calais__pps_request(a, proto, &caps, req, &req_len, &s->params);
		if (rv != SCARD_S_SUCCESS)
			goto out;
		if (req_len) {
			s->timeout_ms = DEFAULT_TIMEOUT_MS;
			rv = xfr_block(s, req, req_len, s->st->level == CALAIS__CCID_CHARACTER
			                                     ? (uint16_t)req_len : 0,
			               0, resp, &resp_len, DEFAULT_TIMEOUT_MS, NULL);
			if (rv == SCARD_S_SUCCESS)
				rv = calais__pps_check(req, req_len, resp, resp_len, a, clock, &s->params);
			if (rv != SCARD_S_SUCCESS) {
				ccid_info("%s: PPS failed (%s)", s->port->name, pcsc_stringify_error(rv));
				rv = rv == SCARD_E_PROTO_MISMATCH ? rv : SCARD_W_UNRESPONSIVE_CARD;
				goto out;
			}
		}
	} else {
		/* The reader negotiates (or the card is in specific mode): TA1's values when the
		 * reader can run them, the defaults otherwise. */
		uint8_t fi = 1, di = 1;
		if (a->ta1_present) {
			struct calais__pps_result t;
			calais__pps_params(a, proto, a->fi_index, a->di_index, clock, &t);
			if (!s->desc->max_data_rate || t.rate_bps <= s->desc->max_data_rate) {
				fi = a->fi_index;
				di = a->di_index;
			}
		}
		calais__pps_params(a, proto, fi, di, clock, &s->params);
	}
	if (s->st->set_parameters && (rv = set_parameters(s, proto)) != SCARD_S_SUCCESS)
		goto out;
	s->timeout_ms = exchange_timeout(&s->params);
	if (proto == 1 && s->st->level <= CALAIS__CCID_TPDU) {
		calais__t1_init(&s->t1, a);
		s->t1.user = s;
		if (s->st->level == CALAIS__CCID_TPDU) {
			s->t1.xfer = t1_xfer;
		} else {
			s->t1.xfer = NULL;
			s->t1.send = chr_send;
			s->t1.recv = chr_recv;
		}
		s->t1.bwt_ms = s->params.wt_ms ? s->params.wt_ms : DEFAULT_TIMEOUT_MS;
		s->t1.cwt_ms = s->params.cwt_ms;
		if (s->st->ifsd_request) {
			uint32_t ifsd = s->desc->max_ifsd;
			if (ifsd > 254)
				ifsd = 254;
			if (ifsd > 32 && (rv = calais__t1_set_ifsd(&s->t1, (uint8_t)ifsd)) != SCARD_S_SUCCESS) {
				ccid_info("%s: IFSD request failed (%s)", s->port->name,
				          pcsc_stringify_error(rv));
				rv = SCARD_W_UNRESPONSIVE_CARD;
				goto out;
			}
		}
	}
	s->protocol = protocol;
out:
	calais__ccid_leave(s->port);
	return rv;
}

/* ---- transmit ------------------------------------------------------------------------------- */

LONG calais__ccid_transmit(struct calais__ccid_slot *s, uint32_t protocol, const uint8_t *tx,
                           size_t tx_len, uint8_t *rx, size_t *rx_len)
{
	LONG rv = calais__ccid_enter(s->port, s->index, true);
	if (rv != SCARD_S_SUCCESS) {
		s->deadline_ms = 0;
		return rv;
	}
	if (!s->powered) {
		rv = SCARD_W_UNPOWERED_CARD;
		goto out;
	}
	if (protocol == SCARD_PROTOCOL_RAW || s->st->level == CALAIS__CCID_SHORT_APDU) {
		if (tx_len > s->st->max_apdu) {
			ccid_info("%s: command of %zu bytes, the reader takes at most %u",
			          s->port->name, tx_len, s->st->max_apdu);
			rv = SCARD_E_INVALID_PARAMETER;
			goto out;
		}
		rv = xfr_block(s, tx, tx_len, 0, 0, rx, rx_len, s->timeout_ms, NULL);
		goto out;
	}
	switch (s->st->level) {
	case CALAIS__CCID_EXTENDED_APDU:
		rv = xfr_extended(s, tx, tx_len, rx, rx_len);
		break;
	case CALAIS__CCID_TPDU:
	case CALAIS__CCID_CHARACTER:
		if (protocol == SCARD_PROTOCOL_T1) {
			if (s->protocol != SCARD_PROTOCOL_T1) {
				rv = SCARD_E_PROTO_MISMATCH;
				break;
			}
			s->t1.deadline_ms = s->deadline_ms;
			s->t1.cancelled = slot_cancelled;
			s->t1.name = s->port->name;
			rv = calais__t1_transceive(&s->t1, tx, tx_len, rx, rx_len);
		} else {
			struct calais__t0_io io = {
				.user = s,
				.wt_ms = s->params.wt_ms ? s->params.wt_ms : DEFAULT_TIMEOUT_MS,
				.max_nulls = 1000,
				.auto_get_response = true,
				.deadline_ms = s->deadline_ms,
				.cancelled = slot_cancelled,
			};
			if (s->st->level == CALAIS__CCID_TPDU) {
				io.tpdu = t0_tpdu;
			} else {
				io.send = chr_send;
				io.recv = chr_recv;
			}
			s->chr_len = 0;
			rv = calais__t0_transceive(&io, tx, tx_len, rx, rx_len);
		}
		break;
	default:
		rv = SCARD_E_INVALID_PARAMETER;
		break;
	}
out:
	if (rv == STORM_RV && s->storm)
		rv = SCARD_F_COMM_ERROR;
	s->storm = false;
	s->deadline_ms = 0; /* this exchange's only */
	calais__ccid_leave(s->port);
	return rv;
}

/* ---- part 10 -------------------------------------------------------------------------------- */

size_t calais__ccid_features(const struct calais__ccid_slot *s, struct calais_feature *out)
{
	size_t n = 0;
	if (s->st->pin_verify)
		out[n++] = (struct calais_feature){ FEATURE_VERIFY_PIN_DIRECT,
		                                    CALAIS__CCID_IOCTL(FEATURE_VERIFY_PIN_DIRECT) };
	if (s->st->pin_modify)
		out[n++] = (struct calais_feature){ FEATURE_MODIFY_PIN_DIRECT,
		                                    CALAIS__CCID_IOCTL(FEATURE_MODIFY_PIN_DIRECT) };
	if (s->st->pin_verify || s->st->pin_modify)
		out[n++] = (struct calais_feature){ FEATURE_IFD_PIN_PROPERTIES,
		                                    CALAIS__CCID_IOCTL(FEATURE_IFD_PIN_PROPERTIES) };
	out[n++] = (struct calais_feature){ FEATURE_GET_TLV_PROPERTIES,
	                                    CALAIS__CCID_IOCTL(FEATURE_GET_TLV_PROPERTIES) };
	if (s->escape)
		out[n++] = (struct calais_feature){ FEATURE_CCID_ESC_COMMAND,
		                                    CALAIS__CCID_IOCTL(FEATURE_CCID_ESC_COMMAND) };
	return n;
}

static LONG put_answer(const uint8_t *b, size_t n, uint8_t *out, size_t cap, size_t *out_len)
{
	*out_len = n;
	if (n > cap)
		return SCARD_E_INSUFFICIENT_BUFFER;
	memcpy(out, b, n);
	return SCARD_S_SUCCESS;
}

static size_t tlv(uint8_t *b, uint8_t tag, uint32_t v, uint8_t len)
{
	b[0] = tag;
	b[1] = len;
	for (uint8_t i = 0; i < len; i++)
		b[2 + i] = (uint8_t)(v >> (8 * i));
	return 2u + len;
}

/* PC_to_RDR_Secure for FEATURE_VERIFY/MODIFY_PIN_DIRECT: the part 10 structure becomes
 * the CCID one (bTimerOut2 and ulDataLength dropped, message indexes as announced). The
 * PIN itself never passes through the host. */
static LONG secure(struct calais__ccid_slot *s, bool modify, const uint8_t *in, size_t in_len,
                   uint8_t *out, size_t out_cap, size_t *out_len)
{
	const size_t head = modify ? 24 : 19;
	if (in_len < head + 4 || in_len > head + 4 + 65535) {
		ccid_info("%s: PIN %s structure of %zu bytes", s->port->name,
		          modify ? "modify" : "verify", in_len);
		return SCARD_E_INVALID_PARAMETER;
	}
	uint32_t data_len = get_le32(in + head - 4);
	if (data_len != in_len - head) {
		ccid_info("%s: PIN structure ulDataLength %u, %zu bytes follow", s->port->name,
		          data_len, in_len - head);
		return SCARD_E_INVALID_PARAMETER;
	}
	uint8_t *msg = malloc(in_len + 1);
	if (!msg)
		return SCARD_E_NO_MEMORY;
	size_t n = 0;
	msg[n++] = modify ? 1 : 0; /* bPINOperation */
	msg[n++] = in[0];          /* bTimerOut; bTimerOut2 dropped */
	if (!modify) {
		memcpy(msg + n, in + 2, 13); /* bmFormatString .. bTeoPrologue */
		n += 13;
		uint8_t *cond = &msg[7];     /* bEntryValidationCondition */
		if (*cond == 0 || *cond > 7)
			*cond = 0x02;
	} else {
		memcpy(msg + n, in + 2, 13); /* bmFormatString .. bMsgIndex1 */
		n += 13;
		uint8_t n_msg = in[11];
		if (n_msg != 0)
			msg[n++] = in[15];   /* bMsgIndex2 */
		if (n_msg >= 3)
			msg[n++] = in[16];   /* bMsgIndex3 */
		memcpy(msg + n, in + 17, 3); /* bTeoPrologue */
		n += 3;
	}
	uint8_t *prologue = msg + n - 3;
	bool t1_blocks = s->protocol == SCARD_PROTOCOL_T1 && s->st->level <= CALAIS__CCID_TPDU;
	if (t1_blocks) {
		/* The reader builds the I-block around the APDU: give it our sequence number. */
		prologue[0] = s->t1.nad;
		prologue[1] = (uint8_t)(s->t1.ns << 6);
		prologue[2] = 0;
	}
	memcpy(msg + n, in + head, data_len);
	n += data_len;

	uint32_t timeout = (in[0] + 10u) * 1000u;
	if (timeout < 90000)
		timeout = 90000;
	LONG rv = calais__ccid_enter(s->port, s->index, true);
	if (rv != SCARD_S_SUCCESS) {
		free(msg);
		return rv;
	}
	struct calais__ccid_reply r;
	uint8_t hdr[3] = { 0, 0, 0 };
	rv = cmd(s, CALAIS__PC_SECURE, hdr, msg, n, &r, timeout);
	free(msg);
	if (rv == SCARD_S_SUCCESS) {
		const uint8_t *d = r.data;
		size_t len = r.len;
		if (t1_blocks) {
			/* The card's block is checked as every other T=1 block is: its length,
			 * EDC, node address, and that it is the unchained I-block answering ours
			 * (N(S) = our N(R)). Anything else (an R- or S-block, a chain) fails the
			 * call; the next APDU's block protocol recovers the sequence. */
			size_t edc = s->t1.crc ? 2 : 1;
			uint8_t want[2];
			bool ok = len >= 3 + edc && d[2] != 0xFF && d[2] == len - 3 - edc;
			if (ok) {
				calais__t1_edc(s->t1.crc, d, len - edc, want);
				ok = memcmp(want, d + len - edc, edc) == 0 &&
				     d[0] == (uint8_t)((s->t1.nad & 0x0F) << 4 | s->t1.nad >> 4) &&
				     (d[1] & 0x80) == 0 && (d[1] & 0x20) == 0 &&
				     ((d[1] >> 6) & 1) == s->t1.nr;
			}
			if (!ok) {
				/* Whether the card took our block is unknown: RESYNCH puts both
				 * sides back in step, or the next APDU could take this answer for
				 * its own. */
				ccid_warn("%s: malformed or unexpected T=1 block after PIN entry "
				          "(%zu bytes, PCB 0x%02X); resynchronising", s->port->name, len,
				          len >= 2 ? d[1] : 0);
				s->t1.deadline_ms = calais__now_ms() + DEFAULT_TIMEOUT_MS;
				s->t1.cancelled = slot_cancelled;
				rv = calais__t1_resynch(&s->t1);
				s->t1.deadline_ms = 0;
				rv = rv == SCARD_S_SUCCESS ? SCARD_F_COMM_ERROR : rv;
				goto out;
			}
			s->t1.ns ^= 1;
			s->t1.nr ^= 1;
			d += 3;
			len = d[-1];
		}
		rv = put_answer(d, len, out, out_cap, out_len);
	} else if (r.error == 0xF0 || r.error == 0xEF) {
		/* PIN entry timed out or was cancelled on the pad: the status words libccid and
		 * part 10 readers give, so applications can tell it from an error. */
		uint8_t sw[2] = { 0x64, r.error == 0xF0 ? 0x00 : 0x01 };
		rv = put_answer(sw, 2, out, out_cap, out_len);
	}
out:
	calais__ccid_leave(s->port);
	return rv;
}

static LONG escape(struct calais__ccid_slot *s, const uint8_t *in, size_t in_len, uint8_t *out,
                   size_t out_cap, size_t *out_len)
{
	if (!s->escape) {
		ccid_info("%s: escape commands are disabled (CALAIS_CCID_ESCAPE=1 enables them)",
		          s->port->name);
		return SCARD_E_UNSUPPORTED_FEATURE;
	}
	LONG rv = calais__ccid_enter(s->port, s->index, true);
	if (rv != SCARD_S_SUCCESS)
		return rv;
	struct calais__ccid_reply r;
	rv = cmd(s, CALAIS__PC_ESCAPE, NULL, in, in_len, &r, 30000);
	if (rv == SCARD_S_SUCCESS)
		rv = put_answer(r.data, r.len, out, out_cap, out_len);
	calais__ccid_leave(s->port);
	return rv;
}

LONG calais__ccid_control(struct calais__ccid_slot *s, uint32_t code, const uint8_t *in,
                          size_t in_len, uint8_t *out, size_t out_cap, size_t *out_len)
{
	*out_len = 0;
	if (code == CALAIS__CCID_IOCTL(FEATURE_VERIFY_PIN_DIRECT) && s->st->pin_verify)
		return secure(s, false, in, in_len, out, out_cap, out_len);
	if (code == CALAIS__CCID_IOCTL(FEATURE_MODIFY_PIN_DIRECT) && s->st->pin_modify)
		return secure(s, true, in, in_len, out, out_cap, out_len);
	if (code == CALAIS__CCID_IOCTL(FEATURE_IFD_PIN_PROPERTIES) &&
	    (s->st->pin_verify || s->st->pin_modify)) {
		uint8_t b[4];
		put_le16(b, s->desc->lcd_layout);
		b[2] = 0x07; /* bEntryValidationCondition: max size, key, timeout */
		b[3] = 0;    /* bTimeOut2 */
		return put_answer(b, sizeof(b), out, out_cap, out_len);
	}
	if (code == CALAIS__CCID_IOCTL(FEATURE_GET_TLV_PROPERTIES)) {
		uint8_t b[64];
		size_t n = 0;
		n += tlv(b + n, PCSCv2_PART10_PROPERTY_wLcdLayout, s->desc->lcd_layout, 2);
		n += tlv(b + n, PCSCv2_PART10_PROPERTY_bEntryValidationCondition, 0x07, 1);
		n += tlv(b + n, PCSCv2_PART10_PROPERTY_bTimeOut2, 0, 1);
		if (s->desc->lcd_layout) {
			n += tlv(b + n, PCSCv2_PART10_PROPERTY_wLcdMaxCharacters,
			         s->desc->lcd_layout & 0xFF, 2);
			n += tlv(b + n, PCSCv2_PART10_PROPERTY_wLcdMaxLines, s->desc->lcd_layout >> 8, 2);
		}
		n += tlv(b + n, PCSCv2_PART10_PROPERTY_bPPDUSupport, 0, 1);
		n += tlv(b + n, PCSCv2_PART10_PROPERTY_dwMaxAPDUDataSize,
		         s->st->level == CALAIS__CCID_SHORT_APDU ? 0 : 0x10000, 4);
		n += tlv(b + n, PCSCv2_PART10_PROPERTY_wIdVendor, s->vid, 2);
		n += tlv(b + n, PCSCv2_PART10_PROPERTY_wIdProduct, s->pid, 2);
		return put_answer(b, n, out, out_cap, out_len);
	}
	if (code == CALAIS__CCID_IOCTL(FEATURE_CCID_ESC_COMMAND) ||
	    code == CALAIS__CCID_IOCTL_VENDOR_IFD_EXCHANGE)
		return escape(s, in, in_len, out, out_cap, out_len);
	return SCARD_E_UNSUPPORTED_FEATURE;
}
