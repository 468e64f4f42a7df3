/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* ATR walking for protocol choice: which protocols a card offers, its default one, and
 * whether TA2 puts it in specific mode (ISO/IEC 7816-3 clause 8). */
#include "calais-internal.h"

LONG calais__atr_protocols(const uint8_t *atr, size_t len, struct calais__atr_info *out)
{
	memset(out, 0, sizeof(*out));
	if (!atr || len < 2 || len > MAX_ATR_SIZE)
		return SCARD_E_INVALID_ATR;
	/* TS: direct (3B) or inverse (3F) convention. Readers hand the ATR over already
	 * decoded, so 3F is read as is. */
	if (atr[0] != 0x3B && atr[0] != 0x3F)
		return SCARD_E_INVALID_ATR;

	size_t i = 1;
	uint8_t y = atr[i] >> 4; /* which of TA..TD follow */
	size_t hist = atr[i] & 0x0F;
	unsigned group = 1;
	bool first_td = true;
	i++;
	for (;;) {
		uint8_t td = 0;
		if (y & 0x1) { /* TAi */
			if (i >= len)
				return SCARD_E_INVALID_ATR;
			if (group == 2) {
				out->specific = true;
				out->specific_proto = (atr[i] & 0x0F) == 1 ? SCARD_PROTOCOL_T1
				                                            : SCARD_PROTOCOL_T0;
			}
			i++;
		}
		if (y & 0x2) /* TBi */
			i++;
		if (y & 0x4) /* TCi */
			i++;
		if (!(y & 0x8))
			break;
		if (i >= len)
			return SCARD_E_INVALID_ATR;
		td = atr[i++];
		unsigned t = td & 0x0F;
		if (t == 0)
			out->protocols |= SCARD_PROTOCOL_T0;
		else if (t == 1)
			out->protocols |= SCARD_PROTOCOL_T1;
		if (first_td && t <= 1)
			out->default_proto = t == 1 ? SCARD_PROTOCOL_T1 : SCARD_PROTOCOL_T0;
		if (first_td)
			first_td = false;
		y = td >> 4;
		group++;
		if (group > 16)
			return SCARD_E_INVALID_ATR;
	}
	if (i + hist > len)
		return SCARD_E_INVALID_ATR;
	/* Without TD1 the card speaks T=0 only. */
	if (!out->protocols) {
		out->protocols = SCARD_PROTOCOL_T0;
		out->default_proto = SCARD_PROTOCOL_T0;
	}
	if (!out->default_proto)
		out->default_proto = out->protocols & SCARD_PROTOCOL_T0 ? SCARD_PROTOCOL_T0
		                                                        : SCARD_PROTOCOL_T1;
	return SCARD_S_SUCCESS;
}
