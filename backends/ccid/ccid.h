/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The CCID backend's internal interface: the class descriptor (CCID 1.1 section 5.1)
 * and the exchange strategy chosen from it. Pure code, shared by the USB and serial
 * transports. */
#ifndef CALAIS_CCID_H
#define CALAIS_CCID_H

#include "calais-internal.h"

/* dwFeatures bits (CCID 1.1 table 5.1-1). */
#define CALAIS__CCID_AUTO_PARAM_ATR 0x00000002u
#define CALAIS__CCID_AUTO_PPS_ACTIVE 0x00000040u
#define CALAIS__CCID_AUTO_PPS_CURRENT 0x00000080u
#define CALAIS__CCID_AUTO_IFSD 0x00000400u
#define CALAIS__CCID_ICCD_TOKEN 0x00000800u
#define CALAIS__CCID_LEVEL_MASK 0x00070000u
#define CALAIS__CCID_LEVEL_TPDU 0x00010000u
#define CALAIS__CCID_LEVEL_SHORT 0x00020000u
#define CALAIS__CCID_LEVEL_EXTENDED 0x00040000u

struct calais__ccid_desc {
	uint16_t bcd_ccid;
	uint8_t max_slot_index, voltage_support;
	uint32_t protocols, default_clock_khz, max_clock_khz;
	uint8_t num_clocks;
	uint32_t data_rate, max_data_rate;
	uint8_t num_rates;
	uint32_t max_ifsd, synch_protocols, mechanical, features, max_message_length;
	uint8_t class_get_response, class_envelope;
	uint16_t lcd_layout;
	uint8_t pin_support, max_busy_slots;
};

enum calais__ccid_level {
	CALAIS__CCID_CHARACTER,
	CALAIS__CCID_TPDU,
	CALAIS__CCID_SHORT_APDU,
	CALAIS__CCID_EXTENDED_APDU,
};

/* What the backend does with a reader, decided once from its descriptor. */
struct calais__ccid_strategy {
	enum calais__ccid_level level;
	unsigned slots;        /* bMaxSlotIndex + 1 */
	bool host_pps;         /* the host negotiates PPS (the reader does not) */
	bool set_parameters;   /* the host sends SetParameters after the ATR/PPS */
	bool ifsd_request;     /* the host sends S(IFS request) before the first T=1 APDU */
	bool pin_verify, pin_modify;
	uint32_t max_apdu;     /* the largest command the reader takes (SCARD_ATTR_MAXINPUT) */
};

/* Parses a CCID class descriptor (bLength 0x36, bDescriptorType 0x21). Every byte is
 * untrusted: SCARD_E_READER_UNSUPPORTED with a log line for a malformed one. */
LONG calais__ccid_desc_parse(const uint8_t *b, size_t n, struct calais__ccid_desc *d);
void calais__ccid_strategy(const struct calais__ccid_desc *d, struct calais__ccid_strategy *s);

#endif
