/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The CCID message layer (CCID 1.1 chapter 6), common to the USB and serial transports:
 * framing, bSeq checking, bStatus/bError decoding, time extensions and the abort
 * procedure, every wait bounded and interruptible, and the sharing of one reply pipe by
 * the slots that may be busy at once (bMaxCCIDBusySlots). Every reply is untrusted. */
#include "ccid.h"

#include <stdlib.h>

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* A command whose reply is due (port->waits, under port->mx). */
struct calais__ccid_wait {
	struct calais__ccid_wait *next;
	uint8_t slot, seq;
	uint8_t *buf;    /* the slot's reply buffer */
	size_t len;      /* of the reply filed there */
	bool filed;      /* another command's read put our reply in buf */
	bool receptive;  /* inside receive(): buf may be written */
};

LONG calais__ccid_port_init(struct calais__ccid_port *p, uint32_t max_msg)
{
	if (max_msg > CALAIS__CCID_MSG_MAX)
		max_msg = CALAIS__CCID_MSG_MAX;
	if (max_msg < CALAIS__CCID_HEADER + 5)
		return SCARD_E_READER_UNSUPPORTED;
	p->max_msg = max_msg;
	p->tx = malloc(max_msg);
	if (!p->tx)
		return SCARD_E_NO_MEMORY;
	if (!p->max_busy)
		p->max_busy = 1;
	atomic_store(&p->reader_slot, -1);
	calais__mutex_init(&p->lock);
	calais__mutex_init(&p->txl);
	calais__mutex_init(&p->mx);
	calais__cond_init(&p->cond);
	return SCARD_S_SUCCESS;
}

void calais__ccid_port_free(struct calais__ccid_port *p)
{
	if (!p->tx)
		return;
	calais__cond_destroy(&p->cond);
	calais__mutex_destroy(&p->mx);
	calais__mutex_destroy(&p->txl);
	calais__mutex_destroy(&p->lock);
	free(p->tx);
	p->tx = NULL;
	for (size_t i = 0; i < CALAIS__CCID_SLOTS; i++) {
		free(p->rx[i]);
		p->rx[i] = NULL;
	}
}

static bool cancelled(struct calais__ccid_port *p, uint8_t slot)
{
	return p->cancel || p->cancel_slot[slot];
}

LONG calais__ccid_enter(struct calais__ccid_port *p, uint8_t slot, bool wait)
{
	LONG rv = SCARD_S_SUCCESS;
	calais__mutex_lock(&p->mx);
	while (p->busy >= p->max_busy) {
		if (p->gone) {
			rv = SCARD_E_READER_UNAVAILABLE;
			break;
		}
		if (cancelled(p, slot)) {
			rv = SCARD_E_CANCELLED;
			break;
		}
		if (!wait) {
			rv = SCARD_E_NOT_READY;
			break;
		}
		/* Slices, in case a wake-up is missed: cancel() broadcasts. */
		calais__cond_wait_until(&p->cond, &p->mx, calais__now_ms() + 100);
	}
	if (rv == SCARD_S_SUCCESS)
		p->busy++;
	calais__mutex_unlock(&p->mx);
	if (rv == SCARD_S_SUCCESS && p->max_busy == 1)
		calais__mutex_lock(&p->lock);
	return rv;
}

void calais__ccid_leave(struct calais__ccid_port *p)
{
	if (p->max_busy == 1)
		calais__mutex_unlock(&p->lock);
	calais__mutex_lock(&p->mx);
	p->busy--;
	calais__cond_broadcast(&p->cond);
	calais__mutex_unlock(&p->mx);
}

void calais__ccid_wake(struct calais__ccid_port *p)
{
	calais__mutex_lock(&p->mx);
	calais__cond_broadcast(&p->cond);
	calais__mutex_unlock(&p->mx);
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

/* The command the message b (n bytes) answers: another waiting command's, or NULL
 * (ours, a stale reply, or a message too short to tell). mx held. */
static struct calais__ccid_wait *owner(struct calais__ccid_port *p, struct calais__ccid_wait *self,
                                       const uint8_t *b, size_t n)
{
	if (n < CALAIS__CCID_HEADER)
		return NULL;
	for (struct calais__ccid_wait *o = p->waits; o; o = o->next)
		if (o != self && o->slot == b[5] && o->seq == b[6])
			return o;
	return NULL;
}

static bool listed(struct calais__ccid_port *p, struct calais__ccid_wait *w)
{
	for (struct calais__ccid_wait *o = p->waits; o; o = o->next)
		if (o == w)
			return true;
	return false;
}

/* The next message for w within timeout_ms: filed by another command's read, or read
 * here while no other command reads the pipe; a message for another waiting command is
 * filed in its wait. Ends early on the device gone and (unless ignore_cancel) on cancel. */
static LONG receive(struct calais__ccid_port *p, struct calais__ccid_wait *w, uint32_t timeout_ms,
                    bool ignore_cancel, size_t *got)
{
	uint64_t until = calais__now_ms() + timeout_ms;
	LONG rv;
	calais__mutex_lock(&p->mx);
	w->receptive = true;
	calais__cond_broadcast(&p->cond);
	for (;;) {
		if (w->filed) {
			w->filed = false;
			*got = w->len;
			rv = SCARD_S_SUCCESS;
			break;
		}
		if (p->gone) {
			rv = SCARD_E_READER_UNAVAILABLE;
			break;
		}
		if (!ignore_cancel && cancelled(p, w->slot)) {
			rv = SCARD_E_CANCELLED;
			break;
		}
		uint64_t now = calais__now_ms();
		if (now >= until) {
			rv = SCARD_E_TIMEOUT;
			break;
		}
		if (p->reading) {
			uint64_t slice = now + 100;
			calais__cond_wait_until(&p->cond, &p->mx, slice < until ? slice : until);
			continue;
		}
		p->reading = true;
		atomic_store(&p->reader_slot, (int)w->slot);
		calais__mutex_unlock(&p->mx);
		size_t n = 0;
		rv = p->recv(p->user, w->buf, p->max_msg, &n, (uint32_t)(until - now));
		calais__mutex_lock(&p->mx);
		atomic_store(&p->reader_slot, -1);
		if (rv == SCARD_S_SUCCESS) {
			struct calais__ccid_wait *o = owner(p, w, w->buf, n);
			/* Another slot's reply: filed once that command is back in receive()
			 * (it may be busy with its last message), or dropped when it is gone. */
			while (o && (!o->receptive || o->filed) && listed(p, o) && !p->gone)
				calais__cond_wait_until(&p->cond, &p->mx, calais__now_ms() + 100);
			if (o && listed(p, o) && o->receptive && !o->filed) {
				memcpy(o->buf, w->buf, n);
				o->len = n;
				o->filed = true;
			}
			p->reading = false;
			calais__cond_broadcast(&p->cond);
			if (o)
				continue;
			*got = n;
			break;
		}
		p->reading = false;
		calais__cond_broadcast(&p->cond);
		/* Another slot's cancel() stopped the transfer we were running: read on. Our
		 * reply may have been filed while we read. */
		if (rv == SCARD_E_CANCELLED && (ignore_cancel || !cancelled(p, w->slot)))
			continue;
		if (rv == SCARD_E_TIMEOUT && w->filed)
			continue;
		break;
	}
	w->receptive = false;
	calais__mutex_unlock(&p->mx);
	return rv;
}

/* Sends one message; for a command (w not NULL) takes the next bSeq and lists w first,
 * so no reply can come before its wait is known. */
static LONG send_msg(struct calais__ccid_port *p, struct calais__ccid_wait *w, uint8_t type,
                     uint8_t slot, uint8_t seq, const uint8_t hdr[3], const uint8_t *data,
                     size_t n, uint32_t timeout_ms)
{
	calais__mutex_lock(&p->txl);
	if (w) {
		seq = p->seq++;
		calais__mutex_lock(&p->mx);
		w->slot = slot;
		w->seq = seq;
		w->next = p->waits;
		p->waits = w;
		calais__mutex_unlock(&p->mx);
	}
	put_header(p->tx, type, (uint32_t)n, slot, seq, hdr);
	if (n)
		memmove(p->tx + CALAIS__CCID_HEADER, data, n);
	LONG rv = p->send(p->user, p->tx, CALAIS__CCID_HEADER + n, timeout_ms);
	calais__mutex_unlock(&p->txl);
	return rv;
}

static void unlist(struct calais__ccid_port *p, struct calais__ccid_wait *w)
{
	calais__mutex_lock(&p->mx);
	for (struct calais__ccid_wait **pp = &p->waits; *pp; pp = &(*pp)->next)
		if (*pp == w) {
			*pp = w->next;
			break;
		}
	calais__cond_broadcast(&p->cond);
	calais__mutex_unlock(&p->mx);
}

/* The abort procedure (CCID 1.1 5.3.1): class request and PC_to_RDR_Abort with the
 * aborted command's bSlot and bSeq, then its replies drained, all within
 * CALAIS__CCID_ABORT_MS (a cancelled command must end soon). A reader that does not
 * confirm is brought back with the transport's recovery. */
static void abort_command(struct calais__ccid_port *p, struct calais__ccid_wait *w)
{
	uint8_t slot = w->slot, seq = w->seq;
	uint64_t until = calais__now_ms() + CALAIS__CCID_ABORT_MS;
	bool ok = false;
	if (p->gone)
		return;
	if (p->abort && p->abort(p->user, slot, seq) != SCARD_S_SUCCESS)
		ccid_dbg("%s: ABORT request refused", p->name);
	if (send_msg(p, NULL, CALAIS__PC_ABORT, slot, seq, NULL, NULL, 0, 200) == SCARD_S_SUCCESS) {
		/* Up to two replies: the aborted command's (bError CMD_ABORTED) and the Abort's
		 * SlotStatus; stop at the latter. */
		for (int i = 0; i < 4; i++) {
			uint64_t now = calais__now_ms();
			size_t n;
			struct calais__ccid_reply r;
			if (now >= until || receive(p, w, (uint32_t)(until - now), true, &n) != SCARD_S_SUCCESS)
				break;
			if (calais__ccid_parse_reply(w->buf, n, &r) == SCARD_S_SUCCESS &&
			    r.type == CALAIS__RDR_SLOT_STATUS && r.seq == seq && r.slot == slot &&
			    (r.status & 0xC0) == 0) {
				ok = true;
				break;
			}
		}
	}
	if (!ok && !p->gone) {
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
	return calais__ccid_command_until(p, type, slot, hdr, data, n, rep, timeout_ms, 0);
}

static LONG command(struct calais__ccid_port *p, struct calais__ccid_wait *w, uint8_t type,
                    uint8_t slot, const uint8_t hdr[3], const uint8_t *data, size_t n,
                    struct calais__ccid_reply *rep, uint32_t timeout_ms, uint64_t end);

LONG calais__ccid_command_until(struct calais__ccid_port *p, uint8_t type, uint8_t slot,
                                const uint8_t hdr[3], const uint8_t *data, size_t n,
                                struct calais__ccid_reply *rep, uint32_t timeout_ms,
                                uint64_t deadline_ms)
{
	memset(rep, 0, sizeof(*rep));
	if (p->gone)
		return SCARD_E_READER_UNAVAILABLE;
	if (cancelled(p, slot))
		return SCARD_E_CANCELLED;
	if (n > p->max_msg - CALAIS__CCID_HEADER) {
		ccid_warn("%s: command of %zu bytes exceeds dwMaxCCIDMessageLength %u", p->name, n,
		          p->max_msg);
		return SCARD_E_INSUFFICIENT_BUFFER;
	}
	if (!p->rx[slot] && !(p->rx[slot] = malloc(p->max_msg)))
		return SCARD_E_NO_MEMORY; /* one command per slot: only this thread sets it */
	struct calais__ccid_wait w = { .buf = p->rx[slot] };
	uint64_t end = deadline_ms ? deadline_ms : calais__now_ms() + 2 * (uint64_t)timeout_ms;
	LONG rv = send_msg(p, &w, type, slot, 0, hdr, data, n, 5000);
	if (rv == SCARD_S_SUCCESS)
		rv = command(p, &w, type, slot, hdr, data, n, rep, timeout_ms, end);
	else if (rv == SCARD_E_READER_UNAVAILABLE)
		p->gone = true;
	unlist(p, &w);
	return rv;
}

static LONG command(struct calais__ccid_port *p, struct calais__ccid_wait *w, uint8_t type,
                    uint8_t slot, const uint8_t hdr[3], const uint8_t *data, size_t n,
                    struct calais__ccid_reply *rep, uint32_t timeout_ms, uint64_t end)
{
	uint8_t seq = w->seq;
	unsigned stale = 0, extensions = 0, quick = 0;
	uint32_t wait = timeout_ms;
	LONG rv;
	for (;;) {
		uint64_t now = calais__now_ms();
		if (now >= end) {
			ccid_warn("%s: command 0x%02X (slot %u, seq %u) past its deadline (the exchange "
			          "limit or twice its %u ms timeout)%s", p->name, type, slot, seq,
			          timeout_ms, extensions ? " after time extensions" : "");
			abort_command(p, w);
			return SCARD_E_TIMEOUT;
		}
		if (end - now < wait)
			wait = (uint32_t)(end - now);
		size_t got;
		rv = receive(p, w, wait, false, &got);
		if (rv == SCARD_E_TIMEOUT && calais__now_ms() >= end)
			continue; /* reported above */
		if (rv == SCARD_E_TIMEOUT || rv == SCARD_E_CANCELLED) {
			ccid_warn("%s: %s waiting for the answer to command 0x%02X (slot %u, seq %u)",
			          p->name, rv == SCARD_E_TIMEOUT ? "timeout" : "cancelled", type,
			          slot, seq);
			abort_command(p, w);
			return rv;
		}
		if (rv == SCARD_E_READER_UNAVAILABLE)
			p->gone = true;
		if (rv != SCARD_S_SUCCESS)
			return rv;
		rv = calais__ccid_parse_reply(w->buf, got, rep);
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
			quick = calais__now_ms() - now < CALAIS__CCID_TIME_EXT_QUICK_MS ? quick + 1 : 0;
			if (++extensions > CALAIS__CCID_MAX_TIME_EXT ||
			    quick > CALAIS__CCID_MAX_TIME_EXT_QUICK) {
				ccid_warn("%s: time extension storm on command 0x%02X (slot %u): %u "
				          "requests, %u of them at once in a row; command aborted",
				          p->name, type, slot, extensions, quick);
				abort_command(p, w);
				rep->storm = true;
				return SCARD_F_COMM_ERROR;
			}
			uint64_t t = (uint64_t)timeout_ms * (rep->error ? rep->error : 1);
			wait = t > 600000 ? 600000 : (uint32_t)t;
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

size_t calais__ccid_intr_parse(const char *name, const uint8_t *b, size_t n, size_t n_slots,
                               uint8_t *bits)
{
	if (n >= 2 && b[0] == CALAIS__RDR_NOTIFY_SLOT_CHANGE) {
		/* bmSlotICCState: two bits a slot, four slots a byte. */
		size_t k = 0;
		for (; k < n_slots && 1 + k / 4 < n; k++)
			bits[k] = (uint8_t)(b[1 + k / 4] >> (2 * (k % 4)) & 3);
		return k;
	}
	if (n >= 4 && b[0] == CALAIS__RDR_HARDWARE_ERROR)
		ccid_warn("%s: hardware error 0x%02X on slot %u", name, b[3], b[1]);
	else if (n)
		ccid_info("%s: unknown interrupt message 0x%02X (%zu bytes)", name, b[0], n);
	return 0;
}
