/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The PC/SC API's exchanges with the reader: SCardTransmit(), SCardControl() (with the
 * part 10 feature list) and SCardGetAttrib()/SCardSetAttrib(). */
#include "api.h"

#include <stdlib.h>
#include <string.h>

#define M (&calais__mgr)

/* ---- I/O -------------------------------------------------------------------------------- */

/*
 * Outputs as pcsc-lite's: *pcbRecvLength is 0 on every failure past the argument
 * checks (a command over MAX_BUFFER_SIZE_EXTENDED, refused after the handle check, leaves
 * it alone), except SCARD_E_INSUFFICIENT_BUFFER (the needed length when the backend knows
 * it); a buffer under 2 bytes does not stop the command (pcscd always receives into a
 * full-size buffer): the answer then goes to a buffer of ours and its length is
 * reported. pioRecvPci is written on success only. Another handle's transaction is
 * waited for (pcsc-lite's client retries).
 */
LONG SCardTransmit(SCARDHANDLE hCard, const SCARD_IO_REQUEST *pioSendPci, LPCBYTE pbSendBuffer,
                   DWORD cbSendLength, SCARD_IO_REQUEST *pioRecvPci, LPBYTE pbRecvBuffer,
                   LPDWORD pcbRecvLength)
{
	if (!pioSendPci || !pbSendBuffer || !pbRecvBuffer || !pcbRecvLength || cbSendLength == 0)
		return SCARD_E_INVALID_PARAMETER;
	LONG rv = calais__handle_check(hCard);
	if (rv != SCARD_S_SUCCESS) {
		*pcbRecvLength = 0;
		return rv;
	}
	if (cbSendLength > MAX_BUFFER_SIZE_EXTENDED)
		return SCARD_E_INSUFFICIENT_BUFFER;
	DWORD cap = *pcbRecvLength;
	*pcbRecvLength = 0;
	uint8_t *rx = pbRecvBuffer, *spare = NULL;
	size_t rx_cap = cap;
	if (cap < 2) {
		spare = malloc(MAX_BUFFER_SIZE_EXTENDED);
		if (!spare)
			return SCARD_E_NO_MEMORY;
		rx = spare;
		rx_cap = MAX_BUFFER_SIZE_EXTENDED;
	}
	struct calais__call call;
	rv = calais__call_begin(&call, hCard, CALAIS__TURN_EVENTS);
	if (rv != SCARD_S_SUCCESS) {
		free(spare);
		return rv;
	}
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
		size_t rx_len = rx_cap;
		calais__mutex_unlock(&M->lock);
		calais__log_apdu("core", "send", pbSendBuffer, cbSendLength);
		/* The cfg is fixed while the manager runs: read without mgr.lock. */
		rv = r->bi->be->transmit(r, proto, pbSendBuffer, cbSendLength, rx, &rx_len,
		                         M->cfg.exchange_timeout_ms);
		/* The card no longer answers (T=1: RESYNCH failed three times, 11.6.3.2): it is
		 * deactivated, and no longer shown powered. */
		if (rv == SCARD_W_UNRESPONSIVE_CARD)
			calais__reader_power_down(r);
		if (rv == SCARD_S_SUCCESS && rx_len > rx_cap) {
			calais__err("\"%s\": backend overran the receive buffer", r->name);
			rv = SCARD_F_INTERNAL_ERROR;
		}
		if (rv == SCARD_S_SUCCESS && rx_len >= 2)
			calais__dbg("recv %zu bytes, SW %02X%02X", rx_len, rx[rx_len - 2],
			            rx[rx_len - 1]);
		calais__mutex_lock(&M->lock);
		rv = calais__reader_io_rv(r, rv);
		if (rv == SCARD_S_SUCCESS && rx_len > cap)
			rv = SCARD_E_INSUFFICIENT_BUFFER; /* the spare buffer's answer */
		switch (rv) {
		case SCARD_S_SUCCESS:
			if (spare)
				memcpy(pbRecvBuffer, spare, rx_len);
			*pcbRecvLength = (DWORD)rx_len;
			if (pioRecvPci) {
				pioRecvPci->dwProtocol = proto;
				pioRecvPci->cbPciLength = sizeof(SCARD_IO_REQUEST);
			}
			break;
		case SCARD_E_INSUFFICIENT_BUFFER:
			/* The needed size when the backend knows it, as pcsc-lite reports. */
			*pcbRecvLength = rx_len > cap ? (DWORD)rx_len : 0;
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
	free(spare);
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

/* As pcsc-lite's: lpBytesReturned may be NULL and is 0 from the start; the handle is
 * checked first; another handle's transaction is SCARD_E_SHARING_VIOLATION at once. */
LONG SCardControl(SCARDHANDLE hCard, DWORD dwControlCode, LPCVOID pbSendBuffer, DWORD cbSendLength,
                  LPVOID pbRecvBuffer, DWORD cbRecvLength, LPDWORD lpBytesReturned)
{
	DWORD returned_unused;
	if (!lpBytesReturned)
		lpBytesReturned = &returned_unused;
	*lpBytesReturned = 0;
	LONG rv = calais__handle_check(hCard);
	if (rv != SCARD_S_SUCCESS)
		return rv;
	if (cbSendLength > MAX_BUFFER_SIZE_EXTENDED)
		return SCARD_E_INSUFFICIENT_BUFFER;
	/* pcsc-lite would hand these to its socket; refused here. */
	if ((cbSendLength && !pbSendBuffer) || (cbRecvLength && !pbRecvBuffer))
		return SCARD_E_INVALID_PARAMETER;
	struct calais__call call;
	rv = calais__call_begin(&call, hCard, CALAIS__TURN_NO_WAIT);
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

/* Integer attributes are 32-bit little-endian values, as on Windows and with libccid
 * (DWORD is 64 bits on 64-bit Unix: never its size). */
static size_t put_u32(uint8_t *buf, uint32_t v)
{
	buf[0] = (uint8_t)v;
	buf[1] = (uint8_t)(v >> 8);
	buf[2] = (uint8_t)(v >> 16);
	buf[3] = (uint8_t)(v >> 24);
	return 4;
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
		*len = put_u32(buf, r->ifd_version);
		return true;
	case SCARD_ATTR_CHANNEL_ID:
		*len = put_u32(buf, r->channel_id);
		return true;
	case SCARD_ATTR_MAXINPUT:
		*len = put_u32(buf, r->max_input);
		return true;
	case SCARD_ATTR_CURRENT_PROTOCOL_TYPE:
		*len = put_u32(buf, (uint32_t)h->protocol);
		return true;
	case SCARD_ATTR_DEVICE_UNIT:
		*len = put_u32(buf, (uint32_t)r->slot);
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

/*
 * As pcsc-lite's client: a size query (NULL pbAttr) and SCARD_AUTOALLOCATE start from
 * *pcbAttrLen = MAX_BUFFER_SIZE (what a failure leaves), a buffer too small receives
 * what fits and the needed length; another handle's transaction is
 * SCARD_E_SHARING_VIOLATION at once (pcscd's SCardGetAttrib does not wait, nor does
 * Windows'). Differences (README): a buffer larger than MAX_BUFFER_SIZE is used
 * (pcsc-lite refuses it), and a failed SCARD_AUTOALLOCATE call leaves NULL, not an
 * allocation, in *pbAttr.
 */
LONG SCardGetAttrib(SCARDHANDLE hCard, DWORD dwAttrId, LPBYTE pbAttr, LPDWORD pcbAttrLen)
{
	if (!pcbAttrLen)
		return SCARD_E_INVALID_PARAMETER;
	bool autoalloc = *pcbAttrLen == SCARD_AUTOALLOCATE;
	if (autoalloc && !pbAttr)
		return SCARD_E_INVALID_PARAMETER;
	DWORD cap = *pcbAttrLen;
	if (autoalloc) {
		*(LPBYTE *)pbAttr = NULL;
		*pcbAttrLen = MAX_BUFFER_SIZE;
	} else if (!pbAttr) {
		*pcbAttrLen = MAX_BUFFER_SIZE;
	}
	struct calais__call call;
	LONG rv = calais__call_begin(&call, hCard, CALAIS__TURN_EVENTS | CALAIS__TURN_NO_WAIT);
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
	if (rv == SCARD_S_SUCCESS) {
		*pcbAttrLen = cap;
		rv = calais__put_out(pbAttr, pcbAttrLen, value, len, true);
	}
	calais__touch_tx(h);
	return calais__call_end(&call, rv, CALAIS__CALL_LOST);
}

LONG SCardSetAttrib(SCARDHANDLE hCard, DWORD dwAttrId, LPCBYTE pbAttr, DWORD cbAttrLen)
{
	/* pcsc-lite's checks, in its order; no wait for another handle's transaction. */
	if (!pbAttr || cbAttrLen == 0)
		return SCARD_E_INVALID_PARAMETER;
	LONG rv = calais__handle_check(hCard);
	if (rv != SCARD_S_SUCCESS)
		return rv;
	if (cbAttrLen > MAX_BUFFER_SIZE)
		return SCARD_E_INSUFFICIENT_BUFFER;
	struct calais__call call;
	rv = calais__call_begin(&call, hCard, CALAIS__TURN_EVENTS | CALAIS__TURN_NO_WAIT);
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
