/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* CCID class descriptor parsing and the exchange strategy it implies: exchange level,
 * who does PPS and parameter setting, whether to request IFSD, slots, PIN support. */
#include "ccid.h"

static uint16_t le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

LONG calais__ccid_desc_parse(const uint8_t *b, size_t n, struct calais__ccid_desc *d)
{
	memset(d, 0, sizeof(*d));
	/* Some readers put the descriptor on an endpoint or give it a vendor type (0xFF);
	 * the caller finds it, we only insist on its length. */
	if (!b || n < 54 || b[0] < 54) {
		calais__warn("CCID class descriptor too short (%zu bytes)", n);
		return SCARD_E_READER_UNSUPPORTED;
	}
	if (b[1] != 0x21 && b[1] != 0xFF) {
		calais__warn("not a CCID class descriptor (type 0x%02X)", b[1]);
		return SCARD_E_READER_UNSUPPORTED;
	}
	d->bcd_ccid = le16(b + 2);
	d->max_slot_index = b[4];
	d->voltage_support = b[5];
	d->protocols = le32(b + 6);
	d->default_clock_khz = le32(b + 10);
	d->max_clock_khz = le32(b + 14);
	d->num_clocks = b[18];
	d->data_rate = le32(b + 19);
	d->max_data_rate = le32(b + 23);
	d->num_rates = b[27];
	d->max_ifsd = le32(b + 28);
	d->synch_protocols = le32(b + 32);
	d->mechanical = le32(b + 36);
	d->features = le32(b + 40);
	d->max_message_length = le32(b + 44);
	d->class_get_response = b[48];
	d->class_envelope = b[49];
	d->lcd_layout = le16(b + 50);
	d->pin_support = b[52];
	d->max_busy_slots = b[53];
	/* A message must hold the 10-byte header and a short APDU's worth of data. */
	if (d->max_message_length < 10 + 5) {
		calais__warn("CCID dwMaxCCIDMessageLength %u cannot carry a command",
		             d->max_message_length);
		return SCARD_E_READER_UNSUPPORTED;
	}
	return SCARD_S_SUCCESS;
}

void calais__ccid_strategy(const struct calais__ccid_desc *d, struct calais__ccid_strategy *s)
{
	memset(s, 0, sizeof(*s));
	switch (d->features & CALAIS__CCID_LEVEL_MASK) {
	case CALAIS__CCID_LEVEL_TPDU:
		s->level = CALAIS__CCID_TPDU;
		break;
	case CALAIS__CCID_LEVEL_SHORT:
		s->level = CALAIS__CCID_SHORT_APDU;
		break;
	case CALAIS__CCID_LEVEL_EXTENDED:
		s->level = CALAIS__CCID_EXTENDED_APDU;
		break;
	default:
		s->level = CALAIS__CCID_CHARACTER;
		break;
	}
	s->slots = (unsigned)d->max_slot_index + 1;
	bool host_protocol = s->level == CALAIS__CCID_CHARACTER || s->level == CALAIS__CCID_TPDU;
	/* At APDU level the reader runs the protocol; below it, the host does what the
	 * reader says it does not do itself. */
	s->host_pps = host_protocol &&
	              !(d->features & (CALAIS__CCID_AUTO_PPS_ACTIVE | CALAIS__CCID_AUTO_PPS_CURRENT));
	s->set_parameters = host_protocol && !(d->features & CALAIS__CCID_AUTO_PARAM_ATR);
	s->ifsd_request = host_protocol && (d->protocols & 2) && !(d->features & CALAIS__CCID_AUTO_IFSD);
	s->pin_verify = d->pin_support & 1;
	s->pin_modify = (d->pin_support & 2) != 0;
	/* libccid reports dwMaxCCIDMessageLength minus the header as the largest input. */
	s->max_apdu = s->level == CALAIS__CCID_EXTENDED_APDU ? MAX_BUFFER_SIZE_EXTENDED
	                                                      : d->max_message_length - 10;
}

LONG calais__ccid_rates_parse(const char *name, const uint8_t *b, size_t len, uint32_t *rates,
                              size_t max, size_t *n)
{
	*n = 0;
	if (len % 4 != 0) {
		ccid_dbg("%s: GET_DATA_RATES answer of %zu bytes: no list", name, len);
		return SCARD_E_INVALID_VALUE;
	}
	for (size_t i = 0; i + 4 <= len && *n < max; i += 4) {
		uint32_t r = le32(b + i);
		if (!r)
			break;
		rates[(*n)++] = r;
	}
	return SCARD_S_SUCCESS;
}
