/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The CCID message layer (CCID 1.1 chapter 6), common to the USB and serial transports:
 * framing, bSeq checking, bStatus/bError decoding, time extensions and the abort
 * procedure. Every reply is untrusted. */
#include "ccid.h"

#include <stdlib.h>

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

LONG calais__ccid_port_init(struct calais__ccid_port *p, uint32_t max_msg)
{
	if (max_msg > CALAIS__CCID_MSG_MAX)
		max_msg = CALAIS__CCID_MSG_MAX;
	if (max_msg < CALAIS__CCID_HEADER + 5)
		return SCARD_E_READER_UNSUPPORTED;
	p->max_msg = max_msg;
	p->tx = malloc(max_msg);
	p->rx = malloc(max_msg);
	if (!p->tx || !p->rx) {
		calais__ccid_port_free(p);
		return SCARD_E_NO_MEMORY;
	}
	calais__mutex_init(&p->lock);
	return SCARD_S_SUCCESS;
}

void calais__ccid_port_free(struct calais__ccid_port *p)
{
	if (p->tx && p->rx)
		calais__mutex_destroy(&p->lock);
	free(p->tx);
	free(p->rx);
	p->tx = p->rx = NULL;
}

const char *calais__ccid_error_name(uint8_t error)
{
	switch (error) {
	case 0xFF: return "CMD_ABORTED";
	case 0xFE: return "ICC_MUTE";
	case 0xFD: return "XFR_PARITY_ERROR";
	case 0xFC: return "XFR_OVERRUN";
	case 0xFB: return "HW_ERROR";
	case 0xF8: return "BAD_ATR_TS";
	case 0xF7: return "BAD_ATR_TCK";
	case 0xF6: return "ICC_PROTOCOL_NOT_SUPPORTED";
	case 0xF5: return "ICC_CLASS_NOT_SUPPORTED";
	case 0xF4: return "PROCEDURE_BYTE_CONFLICT";
	case 0xF3: return "DEACTIVATED_PROTOCOL";
	case 0xF2: return "BUSY_WITH_AUTO_SEQUENCE";
	case 0xF0: return "PIN_TIMEOUT";
	case 0xEF: return "PIN_CANCELLED";
	case 0xE0: return "CMD_SLOT_BUSY";
	case 0x00: return "CMD_NOT_SUPPORTED";
	default:
		if (error >= 0x81 && error <= 0xC0)
			return "vendor error";
		if (error >= 0x01 && error <= 0x7F)
			return "bad parameter";
		return "RFU";
	}
}

LONG calais__ccid_error(uint8_t status, uint8_t error)
{
	unsigned icc = status & 3;
	switch (error) {
	case 0xFE: /* ICC_MUTE: no card, or a card that does not answer */
		return icc == 2 ? SCARD_E_NO_SMARTCARD : SCARD_W_UNRESPONSIVE_CARD;
	case 0xFF:
		return SCARD_E_CANCELLED;
	case 0xF8:
	case 0xF7:
	case 0xF5:
		return SCARD_W_UNSUPPORTED_CARD;
	case 0xF6:
	case 0xF3:
		return SCARD_E_PROTO_MISMATCH;
	case 0xF2:
	case 0xE0:
		return SCARD_E_NOT_READY;
	case 0xF0:
		return SCARD_E_TIMEOUT;
	case 0xEF:
		return SCARD_E_CANCELLED;
	case 0x00:
		return SCARD_E_UNSUPPORTED_FEATURE;
	case 0x05: /* bSlot: the slot does not exist */
		return SCARD_E_READER_UNAVAILABLE;
	default:
		if (icc == 2)
			return SCARD_E_NO_SMARTCARD;
		if (error >= 0x01 && error <= 0x7F)
			return SCARD_E_INVALID_VALUE;
		return SCARD_F_COMM_ERROR; /* parity, overrun, hardware, vendor codes */
	}
}

LONG calais__ccid_parse_reply(const uint8_t *b, size_t n, struct calais__ccid_reply *rep)
{
	memset(rep, 0, sizeof(*rep));
	if (n < CALAIS__CCID_HEADER) {
		ccid_warn("reply of %zu bytes is shorter than the CCID header", n);
		return SCARD_F_COMM_ERROR;
	}
	uint32_t len = le32(b + 1);
	if (len > n - CALAIS__CCID_HEADER) {
		ccid_warn("reply announces %u data bytes, carries %zu", len, n - CALAIS__CCID_HEADER);
		return SCARD_F_COMM_ERROR;
	}
	/* Trailing bytes beyond dwLength (QEMU's Parameters message) are ignored. */
	rep->type = b[0];
	rep->len = len;
	rep->slot = b[5];
	rep->seq = b[6];
	rep->status = b[7];
	rep->error = b[8];
	rep->param = b[9];
	rep->data = b + CALAIS__CCID_HEADER;
	return SCARD_S_SUCCESS;
}

static uint8_t reply_type(uint8_t cmd)
{
	switch (cmd) {
	case CALAIS__PC_ICC_POWER_ON:
	case CALAIS__PC_XFR_BLOCK:
	case CALAIS__PC_SECURE:
		return CALAIS__RDR_DATA_BLOCK;
	case CALAIS__PC_SET_PARAMETERS:
	case CALAIS__PC_GET_PARAMETERS:
	case CALAIS__PC_RESET_PARAMETERS:
		return CALAIS__RDR_PARAMETERS;
	case CALAIS__PC_ESCAPE:
		return CALAIS__RDR_ESCAPE;
	case CALAIS__PC_SET_RATE_CLOCK:
		return CALAIS__RDR_RATE_CLOCK;
	default:
		return CALAIS__RDR_SLOT_STATUS;
	}
}

static void put_header(uint8_t *b, uint8_t type, uint32_t len, uint8_t slot, uint8_t seq,
                       const uint8_t hdr[3])
{
	b[0] = type;
	b[1] = (uint8_t)len;
	b[2] = (uint8_t)(len >> 8);
	b[3] = (uint8_t)(len >> 16);
	b[4] = (uint8_t)(len >> 24);
	b[5] = slot;
	b[6] = seq;
	b[7] = hdr ? hdr[0] : 0;
	b[8] = hdr ? hdr[1] : 0;
	b[9] = hdr ? hdr[2] : 0;
}

/* The abort procedure (CCID 1.1 5.3.1): class request and PC_to_RDR_Abort with the
 * aborted command's bSlot and bSeq, then the replies drained. A reader that supports
 * neither is brought back with the transport's recovery. */
static void abort_command(struct calais__ccid_port *p, uint8_t slot, uint8_t seq)
{
	bool ok = false;
	if (p->abort && p->abort(p->user, slot, seq) != SCARD_S_SUCCESS)
		ccid_dbg("%s: ABORT request refused", p->name);
	uint8_t msg[CALAIS__CCID_HEADER];
	put_header(msg, CALAIS__PC_ABORT, 0, slot, seq, NULL);
	if (p->send(p->user, msg, sizeof(msg), 1000) == SCARD_S_SUCCESS) {
		/* Up to two replies: the aborted command's (bError CMD_ABORTED) and the Abort's
		 * SlotStatus; stop at the latter. */
		for (int i = 0; i < 4; i++) {
			size_t n;
			struct calais__ccid_reply r;
			if (p->recv(p->user, p->rx, p->max_msg, &n, 1000) != SCARD_S_SUCCESS)
				break;
			if (calais__ccid_parse_reply(p->rx, n, &r) == SCARD_S_SUCCESS &&
			    r.type == CALAIS__RDR_SLOT_STATUS && r.seq == seq && r.slot == slot &&
			    (r.status & 0xC0) == 0) {
				ok = true;
				break;
			}
		}
	}
	if (!ok) {
		ccid_warn("%s: abort of command %u on slot %u not confirmed; resetting the pipes",
		          p->name, seq, slot);
		if (p->recover)
			p->recover(p->user);
	}
}

LONG calais__ccid_command(struct calais__ccid_port *p, uint8_t type, uint8_t slot,
                          const uint8_t hdr[3], const uint8_t *data, size_t n,
                          struct calais__ccid_reply *rep, uint32_t timeout_ms)
{
	memset(rep, 0, sizeof(*rep));
	if (p->gone)
		return SCARD_E_READER_UNAVAILABLE;
	if (p->cancel)
		return SCARD_E_CANCELLED;
	if (n > p->max_msg - CALAIS__CCID_HEADER) {
		ccid_warn("%s: command of %zu bytes exceeds dwMaxCCIDMessageLength %u", p->name, n,
		          p->max_msg);
		return SCARD_E_INSUFFICIENT_BUFFER;
	}
	uint8_t seq = p->seq++;
	put_header(p->tx, type, (uint32_t)n, slot, seq, hdr);
	if (n)
		memmove(p->tx + CALAIS__CCID_HEADER, data, n);
	LONG rv = p->send(p->user, p->tx, CALAIS__CCID_HEADER + n, 5000);
	if (rv != SCARD_S_SUCCESS) {
		if (rv == SCARD_E_READER_UNAVAILABLE)
			p->gone = true;
		return rv;
	}

	unsigned stale = 0, extensions = 0;
	uint32_t wait = timeout_ms;
	for (;;) {
		size_t got;
		rv = p->recv(p->user, p->rx, p->max_msg, &got, wait);
		if (rv == SCARD_S_SUCCESS && p->cancel)
			rv = SCARD_E_CANCELLED;
		if (rv == SCARD_E_TIMEOUT || rv == SCARD_E_CANCELLED) {
			ccid_warn("%s: %s waiting for the answer to command 0x%02X (slot %u, seq %u)",
			          p->name, rv == SCARD_E_TIMEOUT ? "timeout" : "cancelled", type,
			          slot, seq);
			abort_command(p, slot, seq);
			return rv;
		}
		if (rv == SCARD_E_READER_UNAVAILABLE)
			p->gone = true;
		if (rv != SCARD_S_SUCCESS)
			return rv;
		rv = calais__ccid_parse_reply(p->rx, got, rep);
		if (rv != SCARD_S_SUCCESS)
			return rv;
		if (rep->seq != seq || rep->slot != slot) {
			ccid_dbg("%s: discarding stale reply (slot %u seq %u, expected %u/%u)",
			         p->name, rep->slot, rep->seq, slot, seq);
			if (++stale > CALAIS__CCID_MAX_STALE) {
				ccid_warn("%s: %u replies with a wrong bSeq; giving up", p->name, stale);
				return SCARD_F_COMM_ERROR;
			}
			continue;
		}
		unsigned cmd_status = rep->status >> 6;
		if (cmd_status == 2) {
			/* Time extension: wait bError times as long for the next message. */
			if (++extensions > CALAIS__CCID_MAX_TIME_EXT) {
				ccid_warn("%s: more than %u time extensions for one command",
				          p->name, CALAIS__CCID_MAX_TIME_EXT);
				abort_command(p, slot, seq);
				return SCARD_F_COMM_ERROR;
			}
			uint64_t w = (uint64_t)timeout_ms * (rep->error ? rep->error : 1);
			wait = w > 600000 ? 600000 : (uint32_t)w;
			continue;
		}
		if (rep->type != reply_type(type) && rep->type != CALAIS__RDR_SLOT_STATUS) {
			ccid_warn("%s: reply type 0x%02X to command 0x%02X", p->name, rep->type, type);
			return SCARD_F_COMM_ERROR;
		}
		if (cmd_status == 1 || cmd_status == 3) {
			rv = calais__ccid_error(rep->status, rep->error);
			calais__ccid_log(rep->error == 0xFE ? CALAIS_LOG_DEBUG : CALAIS_LOG_INFO,
			                 "%s: command 0x%02X failed: bError 0x%02X (%s), bStatus 0x%02X",
			                 p->name, type, rep->error,
			                 calais__ccid_error_name(rep->error), rep->status);
			return rv;
		}
		if (rep->type != reply_type(type)) {
			/* A SlotStatus where another message was due, without a failure: the reader
			 * did not run the command. */
			ccid_warn("%s: SlotStatus answering command 0x%02X", p->name, type);
			return SCARD_E_UNSUPPORTED_FEATURE;
		}
		return SCARD_S_SUCCESS;
	}
}
