/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The PC/SC API's exchanges with the reader: SCardTransmit(), SCardControl() (with the
 * part 10 feature list) and SCardGetAttrib()/SCardSetAttrib(). */
#include "api.h"

#include <string.h>

#define M (&calais__mgr)

/* ---- I/O -------------------------------------------------------------------------------- */

LONG SCardTransmit(SCARDHANDLE hCard, const SCARD_IO_REQUEST *pioSendPci, LPCBYTE pbSendBuffer,
                   DWORD cbSendLength, SCARD_IO_REQUEST *pioRecvPci, LPBYTE pbRecvBuffer,
                   LPDWORD pcbRecvLength)
{
	if (!pioSendPci || !pbSendBuffer || !pbRecvBuffer || !pcbRecvLength || cbSendLength == 0)
		return SCARD_E_INVALID_PARAMETER;
	if (cbSendLength > MAX_BUFFER_SIZE_EXTENDED || *pcbRecvLength < 2)
		return SCARD_E_INSUFFICIENT_BUFFER;
	struct calais__call call;
	LONG rv = calais__call_begin(&call, hCard, true);
	if (rv != SCARD_S_SUCCESS)
		return rv;
	struct calais_handle *h = call.h;
	struct calais_reader *r = call.r;
	DWORD proto = pioSendPci->dwProtocol;
	if (proto == CALAIS__PROTOCOL_ANY_OLD)
		proto = h->protocol;
	if (r->card == CALAIS__CARD_ABSENT || r->card == CALAIS__CARD_INSERTED)
		rv = SCARD_E_NO_SMARTCARD;
	else if (r->card != CALAIS__CARD_POWERED)
		rv = SCARD_W_UNPOWERED_CARD;
	else if (proto != SCARD_PROTOCOL_RAW && (proto != h->protocol || !h->protocol))
		rv = SCARD_E_PROTO_MISMATCH;
	if (rv == SCARD_S_SUCCESS) {
		size_t rx_len = *pcbRecvLength;
		calais__mutex_unlock(&M->lock);
		calais__log_apdu("core", "send", pbSendBuffer, cbSendLength);
		/* The cfg is fixed while the manager runs: read without mgr.lock. */
		rv = r->bi->be->transmit(r, proto, pbSendBuffer, cbSendLength, pbRecvBuffer, &rx_len,
		                         M->cfg.exchange_timeout_ms);
		/* The card no longer answers (T=1: RESYNCH failed three times, 11.6.3.2): it is
		 * deactivated, and no longer shown powered. */
		if (rv == SCARD_W_UNRESPONSIVE_CARD)
			calais__reader_power_down(r);
		if (rv == SCARD_S_SUCCESS && rx_len > *pcbRecvLength) {
			calais__err("\"%s\": backend overran the receive buffer", r->name);
			rv = SCARD_F_INTERNAL_ERROR;
		}
		if (rv == SCARD_S_SUCCESS && rx_len >= 2)
			calais__dbg("recv %zu bytes, SW %02X%02X", rx_len, pbRecvBuffer[rx_len - 2],
			            pbRecvBuffer[rx_len - 1]);
		calais__mutex_lock(&M->lock);
		rv = calais__reader_io_rv(r, rv);
		switch (rv) {
		case SCARD_S_SUCCESS:
			*pcbRecvLength = (DWORD)rx_len;
			if (pioRecvPci) {
				pioRecvPci->dwProtocol = proto;
				pioRecvPci->cbPciLength = sizeof(SCARD_IO_REQUEST);
			}
			break;
		case SCARD_E_INSUFFICIENT_BUFFER:
			/* The needed size when the backend knows it, as Windows reports. */
			*pcbRecvLength = rx_len > *pcbRecvLength ? (DWORD)rx_len : 0;
			break;
		case SCARD_E_NO_SMARTCARD:
		case SCARD_W_REMOVED_CARD:
			rv = SCARD_W_REMOVED_CARD;
			break;
		default:
			calais__dbg("\"%s\": transmit failed: %s", r->name, pcsc_stringify_error(rv));
			break;
		}
		calais__touch_tx(h);
	}
	return calais__call_end(&call, rv, CALAIS__CALL_REMOVED | CALAIS__CALL_LOST);
}

/* The part 10 feature list, answered from what the backend declared. */
static LONG feature_request(const struct calais_reader *r, LPVOID out, DWORD out_len,
                            LPDWORD returned)
{
	size_t need = r->n_features * 6;
	*returned = (DWORD)need;
	if (out_len < need)
		return SCARD_E_INSUFFICIENT_BUFFER;
	uint8_t *p = out;
	for (size_t i = 0; i < r->n_features; i++) {
		uint32_t code = r->features[i].control_code;
		*p++ = r->features[i].tag;
		*p++ = 4;
		*p++ = (uint8_t)(code >> 24);
		*p++ = (uint8_t)(code >> 16);
		*p++ = (uint8_t)(code >> 8);
		*p++ = (uint8_t)code;
	}
	return SCARD_S_SUCCESS;
}

LONG SCardControl(SCARDHANDLE hCard, DWORD dwControlCode, LPCVOID pbSendBuffer, DWORD cbSendLength,
                  LPVOID pbRecvBuffer, DWORD cbRecvLength, LPDWORD lpBytesReturned)
{
	if (!lpBytesReturned || (cbSendLength && !pbSendBuffer) || (cbRecvLength && !pbRecvBuffer))
		return SCARD_E_INVALID_PARAMETER;
	if (cbSendLength > MAX_BUFFER_SIZE_EXTENDED)
		return SCARD_E_INSUFFICIENT_BUFFER;
	*lpBytesReturned = 0;
	struct calais__call call;
	LONG rv = calais__call_begin(&call, hCard, false);
	if (rv != SCARD_S_SUCCESS)
		return rv;
	struct calais_handle *h = call.h;
	struct calais_reader *r = call.r;
	if (dwControlCode == CM_IOCTL_GET_FEATURE_REQUEST) {
		rv = feature_request(r, pbRecvBuffer, cbRecvLength, lpBytesReturned);
	} else if (!r->bi->be->control) {
		rv = SCARD_E_UNSUPPORTED_FEATURE;
	} else {
		size_t out_len = 0;
		calais__mutex_unlock(&M->lock);
		rv = r->bi->be->control(r, (uint32_t)dwControlCode, pbSendBuffer, cbSendLength,
		                        pbRecvBuffer, cbRecvLength, &out_len);
		calais__mutex_lock(&M->lock);
		rv = calais__reader_io_rv(r, rv);
		if ((rv == SCARD_S_SUCCESS && out_len > cbRecvLength)) {
			calais__err("\"%s\": backend overran the control buffer", r->name);
			rv = SCARD_F_INTERNAL_ERROR;
			out_len = 0;
		}
		if (rv == SCARD_S_SUCCESS || rv == SCARD_E_INSUFFICIENT_BUFFER)
			*lpBytesReturned = (DWORD)out_len;
	}
	calais__touch_tx(h);
	return calais__call_end(&call, rv, CALAIS__CALL_LOST);
}

/* ---- attributes ------------------------------------------------------------------------ */

static size_t put_dword(uint8_t *buf, DWORD v)
{
	memcpy(buf, &v, sizeof(v));
	return sizeof(v);
}

/* Attributes the core knows; returns false for the ones left to the backend. */
static bool core_attrib(const struct calais_reader *r, const struct calais_handle *h, DWORD id,
                        uint8_t *buf, size_t *len)
{
	switch (id) {
	case SCARD_ATTR_ATR_STRING:
		*len = r->card == CALAIS__CARD_ABSENT || r->card == CALAIS__CARD_INSERTED ? 0 : r->atr_len;
		memcpy(buf, r->atr, *len);
		return true;
	case SCARD_ATTR_VENDOR_NAME:
		if (!r->vendor)
			return false;
		*len = strlen(r->vendor) + 1;
		memcpy(buf, r->vendor, *len);
		return true;
	case SCARD_ATTR_VENDOR_IFD_VERSION:
		*len = put_dword(buf, r->ifd_version);
		return true;
	case SCARD_ATTR_CHANNEL_ID:
		*len = put_dword(buf, r->channel_id);
		return true;
	case SCARD_ATTR_MAXINPUT: {
		/* libccid answers a 32-bit value here, not a DWORD. */
		uint32_t v = r->max_input;
		memcpy(buf, &v, sizeof(v));
		*len = sizeof(v);
		return true;
	}
	case SCARD_ATTR_CURRENT_PROTOCOL_TYPE:
		*len = put_dword(buf, h->protocol);
		return true;
	case SCARD_ATTR_DEVICE_UNIT:
		*len = put_dword(buf, r->slot);
		return true;
	case SCARD_ATTR_ICC_PRESENCE:
		buf[0] = r->card == CALAIS__CARD_ABSENT || r->card == CALAIS__CARD_INSERTED ? 0
		         : r->card == CALAIS__CARD_POWERED                                ? 2
		                                                                           : 1;
		*len = 1;
		return true;
	case SCARD_ATTR_ICC_INTERFACE_STATUS:
		buf[0] = r->card == CALAIS__CARD_POWERED ? 1 : 0;
		*len = 1;
		return true;
	case SCARD_ATTR_DEVICE_FRIENDLY_NAME_A:
	case SCARD_ATTR_DEVICE_SYSTEM_NAME_A:
		*len = strlen(r->name) + 1;
		memcpy(buf, r->name, *len);
		return true;
	default:
		return false;
	}
}

LONG SCardGetAttrib(SCARDHANDLE hCard, DWORD dwAttrId, LPBYTE pbAttr, LPDWORD pcbAttrLen)
{
	if (!pcbAttrLen)
		return SCARD_E_INVALID_PARAMETER;
	if (*pcbAttrLen == SCARD_AUTOALLOCATE && !pbAttr)
		return SCARD_E_INVALID_PARAMETER;
	struct calais__call call;
	LONG rv = calais__call_begin(&call, hCard, true);
	if (rv != SCARD_S_SUCCESS)
		return rv;
	struct calais_handle *h = call.h;
	struct calais_reader *r = call.r;
	uint8_t value[MAX_BUFFER_SIZE + MAX_READERNAME];
	size_t len = sizeof(value);
	/* Readers of another manager know their descriptive attributes better than their
	 * description does: the backend first, the core's answer as the fallback. */
	bool descriptive = dwAttrId == SCARD_ATTR_VENDOR_NAME ||
	                   dwAttrId == SCARD_ATTR_VENDOR_IFD_VERSION ||
	                   dwAttrId == SCARD_ATTR_CHANNEL_ID || dwAttrId == SCARD_ATTR_MAXINPUT ||
	                   dwAttrId == SCARD_ATTR_DEVICE_UNIT;
	bool backend_first = descriptive && (r->flags & CALAIS_READER_KEEP_NAME) &&
	                     r->bi->be->get_attrib;
	bool answered = !backend_first && core_attrib(r, h, dwAttrId, value, &len);
	if (!answered) {
		if (!r->bi->be->get_attrib) {
			rv = SCARD_E_UNSUPPORTED_FEATURE;
		} else {
			calais__mutex_unlock(&M->lock);
			rv = r->bi->be->get_attrib(r, (uint32_t)dwAttrId, value, &len);
			calais__mutex_lock(&M->lock);
			rv = calais__reader_io_rv(r, rv);
			if (rv == SCARD_S_SUCCESS && len > sizeof(value)) {
				calais__err("\"%s\": backend overran the attribute buffer", r->name);
				rv = SCARD_F_INTERNAL_ERROR;
			}
		}
		if (backend_first && rv != SCARD_S_SUCCESS && rv != SCARD_E_INSUFFICIENT_BUFFER &&
		    rv != SCARD_E_READER_UNAVAILABLE) {
			len = sizeof(value);
			if (core_attrib(r, h, dwAttrId, value, &len))
				rv = SCARD_S_SUCCESS;
		}
	}
	if (rv == SCARD_S_SUCCESS)
		rv = calais__put_out(pbAttr, pcbAttrLen, value, len, false);
	calais__touch_tx(h);
	return calais__call_end(&call, rv, CALAIS__CALL_LOST);
}

LONG SCardSetAttrib(SCARDHANDLE hCard, DWORD dwAttrId, LPCBYTE pbAttr, DWORD cbAttrLen)
{
	if (!pbAttr || cbAttrLen == 0)
		return SCARD_E_INVALID_PARAMETER;
	struct calais__call call;
	LONG rv = calais__call_begin(&call, hCard, true);
	if (rv != SCARD_S_SUCCESS)
		return rv;
	struct calais_handle *h = call.h;
	struct calais_reader *r = call.r;
	if (!r->bi->be->set_attrib) {
		rv = SCARD_E_UNSUPPORTED_FEATURE;
	} else {
		calais__mutex_unlock(&M->lock);
		rv = r->bi->be->set_attrib(r, (uint32_t)dwAttrId, pbAttr, cbAttrLen);
		calais__mutex_lock(&M->lock);
		rv = calais__reader_io_rv(r, rv);
	}
	calais__touch_tx(h);
	return calais__call_end(&call, rv, CALAIS__CALL_LOST);
}
