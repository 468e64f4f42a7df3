/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* ICCD (USB Integrated Circuit(s) Card Devices, rev. 1.0): tokens that carry the card
 * protocol on the control pipe instead of bulk messages. Version A exchanges T=0 TPDUs
 * piecewise (header, then data or answer, then SW1 SW2, with a status byte polled in
 * between); version B exchanges APDUs in data blocks with chaining, status and polling
 * answers. Each CCID message the slot layer sends becomes those requests, and the
 * answers become the CCID reply it expects. Every poll is bounded by the message's time
 * and sleeps in slices that see the port's cancel and gone flags. */
#include "ccid.h"
#include "usb.h"

#define OUT 0x21 /* class request to the interface, host to device */
#define IN 0xA1

#define REQ_POWER_ON 0x62
#define REQ_POWER_OFF 0x63
#define REQ_XFR_BLOCK 0x65
#define REQ_DATA_BLOCK 0x6F
#define REQ_SLOT_STATUS 0x81     /* version B */
#define REQ_GET_ICC_STATUS 0xA0  /* version A */

/* Version A status byte. */
#define A_BUSY 0x40
#define A_ABSENT 0x80
#define A_DATA 0x10
#define A_SW 0x20

/* The longest sleep between two polls before the flags are looked at again. */
#define POLL_SLICE_US 10000u

/* Sleeps us microseconds, but not past until_ms, in slices; SCARD_E_CANCELLED or
 * SCARD_E_READER_UNAVAILABLE as soon as the port is cancelled or the device gone. */
static LONG nap(struct calais__iccd *c, uint64_t us, uint64_t until_ms)
{
	for (;;) {
		if (c->port && c->port->gone)
			return SCARD_E_READER_UNAVAILABLE;
		if (c->port && (c->port->cancel || c->port->cancel_slot[0]))
			return SCARD_E_CANCELLED;
		uint64_t now = calais__now_ms();
		if (us == 0 || now >= until_ms)
			return SCARD_S_SUCCESS;
		uint64_t slice = us < POLL_SLICE_US ? us : POLL_SLICE_US;
		if (slice > (until_ms - now) * 1000u)
			slice = (until_ms - now) * 1000u;
		calais__sleep_us((uint32_t)slice);
		us -= slice;
	}
}

static LONG usb_rv(struct calais__iccd *c, enum calais__usb_status st, const char *what)
{
	switch (st) {
	case CALAIS__USB_OK: return SCARD_S_SUCCESS;
	case CALAIS__USB_TIMEOUT: return SCARD_E_TIMEOUT;
	case CALAIS__USB_NO_DEVICE: return SCARD_E_READER_UNAVAILABLE;
	case CALAIS__USB_CANCELLED: return SCARD_E_CANCELLED;
	default:
		ccid_warn("%s: ICCD %s: %s", c->name, what, calais__usb_status_name(st));
		return SCARD_F_COMM_ERROR;
	}
}

static LONG ctrl(struct calais__iccd *c, uint8_t type, uint8_t req, uint16_t value, uint8_t *buf,
                 size_t len, size_t *done, uint32_t timeout_ms)
{
	size_t got = 0;
	LONG rv = usb_rv(c, c->ops->control(c->h, type, req, value, c->iface, buf, len, &got,
	                                    timeout_ms ? timeout_ms : 5000),
	                 "request");
	if (done)
		*done = got;
	return rv;
}

/* The CCID reply the slot layer will read. */
static void reply(struct calais__iccd *c, uint8_t type, const uint8_t *cmd, uint8_t status,
                  uint8_t error, uint8_t param, const uint8_t *data, size_t n)
{
	uint8_t *b = c->reply;
	b[0] = type;
	b[1] = (uint8_t)n;
	b[2] = (uint8_t)(n >> 8);
	b[3] = b[4] = 0;
	b[5] = cmd[5];
	b[6] = cmd[6];
	b[7] = status;
	b[8] = error;
	b[9] = param;
	if (n)
		memmove(b + 10, data, n);
	c->reply_len = 10 + n;
}

/* ---- version A ------------------------------------------------------------------------ */

/* Polls GET_ICC_STATUS until the device is not busy (bounded by timeout_ms). */
static LONG a_status(struct calais__iccd *c, uint8_t *status, uint32_t timeout_ms)
{
	uint64_t until = calais__now_ms() + (timeout_ms ? timeout_ms : 5000);
	for (;;) {
		size_t n;
		LONG rv = ctrl(c, IN, REQ_GET_ICC_STATUS, 0, status, 1, &n, 1000);
		if (rv != SCARD_S_SUCCESS)
			return rv;
		if (n != 1) {
			ccid_warn("%s: ICCD status of %zu bytes", c->name, n);
			return SCARD_F_COMM_ERROR;
		}
		if (!(*status & A_BUSY))
			return SCARD_S_SUCCESS;
		if (calais__now_ms() >= until)
			return SCARD_E_TIMEOUT;
		if ((rv = nap(c, 10000, until)) != SCARD_S_SUCCESS)
			return rv;
	}
}

static LONG a_command(struct calais__iccd *c, const uint8_t *m, size_t n, uint32_t timeout_ms)
{
	const uint8_t *p = m + CALAIS__CCID_HEADER;
	size_t len = n - CALAIS__CCID_HEADER;
	uint8_t st, buf[CALAIS__ICCD_MAX_DATA + 2];
	size_t got = 0;
	LONG rv;
	switch (m[0]) {
	case CALAIS__PC_ICC_POWER_ON:
		/* Off first: it resets the token's state machine. */
		if ((rv = ctrl(c, OUT, REQ_POWER_OFF, 0, NULL, 0, NULL, 0)) != SCARD_S_SUCCESS ||
		    (rv = a_status(c, &st, timeout_ms)) != SCARD_S_SUCCESS ||
		    (rv = ctrl(c, IN, REQ_POWER_ON, 0, buf, MAX_ATR_SIZE, &got, timeout_ms)) !=
		            SCARD_S_SUCCESS)
			return rv;
		if (got == 0) {
			reply(c, CALAIS__RDR_DATA_BLOCK, m, 0x41, 0xFE, 0, NULL, 0);
			return SCARD_S_SUCCESS;
		}
		reply(c, CALAIS__RDR_DATA_BLOCK, m, 0, 0, 0, buf, got);
		return SCARD_S_SUCCESS;
	case CALAIS__PC_ICC_POWER_OFF:
		if ((rv = ctrl(c, OUT, REQ_POWER_OFF, 0, NULL, 0, NULL, 0)) != SCARD_S_SUCCESS)
			return rv;
		/* fall through */
	case CALAIS__PC_GET_SLOT_STATUS:
		if ((rv = a_status(c, &st, timeout_ms)) != SCARD_S_SUCCESS)
			return rv;
		reply(c, CALAIS__RDR_SLOT_STATUS, m, st == A_ABSENT ? 2 : m[0] == CALAIS__PC_ICC_POWER_OFF,
		      0, 0, NULL, 0);
		return SCARD_S_SUCCESS;
	case CALAIS__PC_XFR_BLOCK: {
		/* One T=0 TPDU: the 5-byte header, then the data the card asks for or the
		 * answer it has, then SW1 SW2. */
		if (len < 4 || len > 5 + 255) {
			reply(c, CALAIS__RDR_DATA_BLOCK, m, 0x40, 1, 0, NULL, 0);
			return SCARD_S_SUCCESS;
		}
		uint8_t hdr[5] = { 0 };
		memcpy(hdr, p, len < 5 ? len : 5);
		size_t body = len > 5 ? len - 5 : 0;
		if ((rv = ctrl(c, OUT, REQ_XFR_BLOCK, 0, hdr, 5, NULL, timeout_ms)) != SCARD_S_SUCCESS ||
		    (rv = a_status(c, &st, timeout_ms)) != SCARD_S_SUCCESS)
			return rv;
		if (st == A_ABSENT) {
			reply(c, CALAIS__RDR_DATA_BLOCK, m, 0x42, 0xFE, 0, NULL, 0);
			return SCARD_S_SUCCESS;
		}
		if (st & A_DATA) {
			if (body)
				rv = ctrl(c, OUT, REQ_XFR_BLOCK, 0, (uint8_t *)p + 5, body, NULL, timeout_ms);
			else
				rv = ctrl(c, IN, REQ_DATA_BLOCK, 0, buf, CALAIS__ICCD_MAX_DATA, &got,
				          timeout_ms);
			if (rv != SCARD_S_SUCCESS || (rv = a_status(c, &st, timeout_ms)) != SCARD_S_SUCCESS)
				return rv;
		}
		if (!(st & A_SW)) {
			ccid_warn("%s: ICCD token gave no status words (status 0x%02X)", c->name, st);
			return SCARD_F_COMM_ERROR;
		}
		size_t sw_len = 0;
		if ((rv = ctrl(c, IN, REQ_DATA_BLOCK, 0, buf + got, 2, &sw_len, timeout_ms)) !=
		    SCARD_S_SUCCESS)
			return rv;
		if (sw_len != 2) {
			ccid_warn("%s: ICCD status words of %zu bytes", c->name, sw_len);
			return SCARD_F_COMM_ERROR;
		}
		reply(c, CALAIS__RDR_DATA_BLOCK, m, 0, 0, 0, buf, got + 2);
		return SCARD_S_SUCCESS;
	}
	default:
		reply(c, CALAIS__RDR_SLOT_STATUS, m, 0x40, 0, 0, NULL, 0);
		return SCARD_S_SUCCESS;
	}
}

/* ---- version B ------------------------------------------------------------------------ */

/* Reads a DATA_BLOCK answer: data (with its chain parameter), a status (a failed
 * command), or a request to poll again later. */
static LONG b_data_block(struct calais__iccd *c, const uint8_t *m, size_t cap,
                         uint32_t timeout_ms)
{
	uint8_t buf[1 + CALAIS__ICCD_MAX_DATA];
	uint64_t until = calais__now_ms() + (timeout_ms ? timeout_ms : 5000);
	if (cap > CALAIS__ICCD_MAX_DATA)
		cap = CALAIS__ICCD_MAX_DATA;
	for (;;) {
		size_t n;
		LONG rv = ctrl(c, IN, REQ_DATA_BLOCK, 0, buf, 1 + cap, &n, timeout_ms);
		if (rv != SCARD_S_SUCCESS)
			return rv;
		if (n == 0) {
			ccid_warn("%s: empty ICCD data block", c->name);
			return SCARD_F_COMM_ERROR;
		}
		switch (buf[0]) {
		case 0x00:
		case 0x01:
		case 0x02:
		case 0x03:
		case 0x10:
			reply(c, CALAIS__RDR_DATA_BLOCK, m, 0, 0, buf[0], buf + 1, n - 1);
			return SCARD_S_SUCCESS;
		case 0x40:
			if (n < 3) {
				ccid_warn("%s: short ICCD status block", c->name);
				return SCARD_F_COMM_ERROR;
			}
			reply(c, CALAIS__RDR_DATA_BLOCK, m, (uint8_t)(0x40 | (buf[1] & 3)), buf[2], 0,
			      NULL, 0);
			return SCARD_S_SUCCESS;
		case 0x80: {
			/* Not ready: come back after the delay it gives (10 ms units, up to
			 * 655 s), within the message's time and interruptibly. */
			unsigned delay = n >= 3 ? (unsigned)(buf[1] | buf[2] << 8) : 0;
			if (calais__now_ms() >= until)
				return SCARD_E_TIMEOUT;
			if ((rv = nap(c, (uint64_t)(delay ? delay : 1) * 10000u, until)) != SCARD_S_SUCCESS)
				return rv;
			continue;
		}
		default:
			ccid_warn("%s: ICCD bResponseType 0x%02X", c->name, buf[0]);
			return SCARD_F_COMM_ERROR;
		}
	}
}

static LONG b_slot_status(struct calais__iccd *c, const uint8_t *m, uint32_t timeout_ms)
{
	uint8_t s[3] = { 0, 2, 0 };
	size_t n;
	LONG rv = ctrl(c, IN, REQ_SLOT_STATUS, 0, s, sizeof(s), &n, timeout_ms);
	if (rv != SCARD_S_SUCCESS)
		return rv;
	if (n < 2) {
		ccid_warn("%s: ICCD slot status of %zu bytes", c->name, n);
		return SCARD_F_COMM_ERROR;
	}
	uint8_t icc = (s[1] & 3) == 3 ? 2 : s[1] & 3;
	reply(c, CALAIS__RDR_SLOT_STATUS, m, icc, 0, 0, NULL, 0);
	return SCARD_S_SUCCESS;
}

static LONG b_command(struct calais__iccd *c, const uint8_t *m, size_t n, uint32_t timeout_ms)
{
	LONG rv;
	switch (m[0]) {
	case CALAIS__PC_ICC_POWER_ON:
		if ((rv = ctrl(c, OUT, REQ_POWER_OFF, 0, NULL, 0, NULL, 0)) != SCARD_S_SUCCESS ||
		    (rv = ctrl(c, OUT, REQ_POWER_ON, 1, NULL, 0, NULL, timeout_ms)) != SCARD_S_SUCCESS)
			return rv;
		return b_data_block(c, m, MAX_ATR_SIZE, timeout_ms);
	case CALAIS__PC_ICC_POWER_OFF:
		if ((rv = ctrl(c, OUT, REQ_POWER_OFF, 0, NULL, 0, NULL, 0)) != SCARD_S_SUCCESS)
			return rv;
		return b_slot_status(c, m, timeout_ms);
	case CALAIS__PC_GET_SLOT_STATUS:
		return b_slot_status(c, m, timeout_ms);
	case CALAIS__PC_XFR_BLOCK: {
		size_t len = n - CALAIS__CCID_HEADER;
		uint16_t level = (uint16_t)(m[8] | m[9] << 8);
		if (len > CALAIS__ICCD_MAX_DATA) {
			reply(c, CALAIS__RDR_DATA_BLOCK, m, 0x40, 1, 0, NULL, 0);
			return SCARD_S_SUCCESS;
		}
		rv = ctrl(c, OUT, REQ_XFR_BLOCK, (uint16_t)(level << 8), (uint8_t *)m + 10, len, NULL,
		          timeout_ms);
		return rv != SCARD_S_SUCCESS ? rv : b_data_block(c, m, CALAIS__ICCD_MAX_DATA, timeout_ms);
	}
	default:
		reply(c, CALAIS__RDR_SLOT_STATUS, m, 0x40, 0, 0, NULL, 0);
		return SCARD_S_SUCCESS;
	}
}

/* ---- the port ------------------------------------------------------------------------- */

LONG calais__iccd_send(void *user, const uint8_t *msg, size_t n, uint32_t timeout_ms)
{
	struct calais__iccd *c = user;
	c->reply_len = 0;
	if (n < CALAIS__CCID_HEADER)
		return SCARD_F_INTERNAL_ERROR;
	if (msg[0] == CALAIS__PC_ABORT) {
		/* No abort on ICCD: answer it so the message layer resumes. */
		reply(c, CALAIS__RDR_SLOT_STATUS, msg, 0, 0, 0, NULL, 0);
		return SCARD_S_SUCCESS;
	}
	/* Card operations may take the card's time: the slot layer's read timeout. */
	uint32_t t = msg[0] == CALAIS__PC_XFR_BLOCK || msg[0] == CALAIS__PC_ICC_POWER_ON ? 10000 : 5000;
	return c->version_b ? b_command(c, msg, n, t) : a_command(c, msg, n, t);
}

LONG calais__iccd_recv(void *user, uint8_t *buf, size_t cap, size_t *n, uint32_t timeout_ms)
{
	struct calais__iccd *c = user;
	*n = 0;
	if (!c->reply_len) {
		/* Nothing pending (a stale read after an abort): the reader stays silent. */
		return SCARD_E_TIMEOUT;
	}
	if (c->reply_len > cap)
		return SCARD_F_COMM_ERROR;
	memcpy(buf, c->reply, c->reply_len);
	*n = c->reply_len;
	c->reply_len = 0;
	return SCARD_S_SUCCESS;
}
