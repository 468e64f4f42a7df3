/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* CTAPHID, the FIDO authenticators' USB HID transport (CTAP 2.1, "USB Human Interface
 * Device"): 64-byte reports, a 4-byte channel id on each, an initialisation packet (command,
 * 2-byte length, 57 bytes) then continuation packets (sequence 0..127, 59 bytes each).
 * Everything the device sends is untrusted: packets for other channels, stray
 * continuations and other programs' INIT answers are dropped; a wrong sequence, a new
 * message in mid-message or a length over 7609 ends the exchange (SCARD_F_COMM_ERROR,
 * logged) and the channel is given up, so nothing of that message is taken for the next
 * one. Every read is bounded (500 ms per packet, 3 s for an answer or the next keepalive,
 * the caller's deadline over all) and looks at the cancel flag every 20 ms. Also the
 * seam helpers every framing shares. */
#include "hid.h"

#include <stdlib.h>

const struct calais__hid_ops *calais__hid_transport;

void calais__hid_free_list(struct calais__hid_info *list, size_t n)
{
	for (size_t i = 0; list && i < n; i++) {
		free(list[i].path);
		free(list[i].serial);
		free(list[i].manufacturer);
		free(list[i].product);
	}
	free(list);
}

const char *calais__hid_status_name(enum calais__hid_status st)
{
	switch (st) {
	case CALAIS__HID_OK: return "success";
	case CALAIS__HID_TIMEOUT: return "timeout";
	case CALAIS__HID_NO_DEVICE: return "device gone";
	case CALAIS__HID_ACCESS: return "permission denied";
	case CALAIS__HID_NO_MEM: return "out of memory";
	default: return "I/O error";
	}
}

enum calais__hid_status calais__hid_read_until(const struct calais__hid_ops *ops,
                                               struct calais__hid_dev *h, uint8_t *report,
                                               uint64_t deadline_ms, atomic_bool *cancel,
                                               bool *cancelled)
{
	*cancelled = false;
	for (;;) {
		if (cancel && atomic_load(cancel)) {
			*cancelled = true;
			return CALAIS__HID_TIMEOUT;
		}
		uint64_t now = calais__now_ms();
		uint32_t slice = deadline_ms > now
			? (uint32_t)(deadline_ms - now < CALAIS__HID_SLICE_MS ? deadline_ms - now
			                                                      : CALAIS__HID_SLICE_MS)
			: 0;
		size_t n = 0;
		memset(report, 0, CALAIS__HID_REPORT);
		enum calais__hid_status st = ops->read(h, report, CALAIS__HID_REPORT, &n, slice);
		if (st == CALAIS__HID_OK && n > 0)
			return CALAIS__HID_OK;
		if (st != CALAIS__HID_OK && st != CALAIS__HID_TIMEOUT)
			return st;
		if (calais__now_ms() >= deadline_ms)
			return CALAIS__HID_TIMEOUT;
	}
}

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static uint64_t min64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

static LONG io_rv(const struct calais__ctaphid *c, enum calais__hid_status st, const char *what)
{
	switch (st) {
	case CALAIS__HID_OK: return SCARD_S_SUCCESS;
	case CALAIS__HID_NO_DEVICE:
		hid_info("%s: device gone (%s)", c->name, what);
		return SCARD_E_READER_UNAVAILABLE;
	case CALAIS__HID_NO_MEM: return SCARD_E_NO_MEMORY;
	default:
		hid_warn("%s: %s failed: %s", c->name, what, calais__hid_status_name(st));
		return SCARD_F_COMM_ERROR;
	}
}

/* A nonce without the manager's lock: a per-process counter through splitmix64, seeded
 * from the clock. Uniqueness is what INIT needs, not secrecy. */
static void default_nonce(uint8_t *out, size_t n)
{
	static atomic_uint_fast64_t state;
	uint64_t z = atomic_fetch_add(&state, 0x9E3779B97F4A7C15ull) ^ calais__now_us() ^
	             (uint64_t)(uintptr_t)out;
	for (size_t i = 0; i < n; i++) {
		if (i % 8 == 0) {
			z += 0x9E3779B97F4A7C15ull;
			z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
			z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
			z ^= z >> 31;
		}
		out[i] = (uint8_t)(z >> (8 * (i % 8)));
	}
}

static LONG send_msg(struct calais__ctaphid *c, uint32_t cid, uint8_t cmd, const uint8_t *data,
                     size_t len)
{
	if (len > CALAIS__CTAPHID_MAX_MSG)
		return SCARD_E_INVALID_PARAMETER;
	uint8_t rep[CALAIS__HID_REPORT];
	memset(rep, 0, sizeof(rep));
	put32(rep, cid);
	rep[4] = cmd;
	rep[5] = (uint8_t)(len >> 8);
	rep[6] = (uint8_t)len;
	size_t n = len < 57 ? len : 57;
	if (n)
		memcpy(rep + 7, data, n);
	enum calais__hid_status st = c->ops->write(c->h, rep, sizeof(rep));
	for (uint8_t seq = 0; st == CALAIS__HID_OK && n < len; seq++) {
		size_t k = len - n < 59 ? len - n : 59;
		memset(rep, 0, sizeof(rep));
		put32(rep, cid);
		rep[4] = seq;
		memcpy(rep + 5, data + n, k);
		n += k;
		st = c->ops->write(c->h, rep, sizeof(rep));
	}
	return io_rv(c, st, "write");
}

/* Reads the next message on channel cid into c->msg. Its first packet must come by
 * first_ms, every later one within CALAIS__CTAPHID_PACKET_MS, all by deadline_ms.
 * SCARD_E_TIMEOUT when no first packet came (nothing logged: the caller says why). */
static LONG recv_msg(struct calais__ctaphid *c, uint32_t cid, uint8_t *cmd, uint64_t first_ms,
                     uint64_t deadline_ms)
{
	uint8_t rep[CALAIS__HID_REPORT];
	bool cancelled;
	for (;;) {
		enum calais__hid_status st = calais__hid_read_until(c->ops, c->h, rep,
		                                                    min64(first_ms, deadline_ms),
		                                                    c->cancel, &cancelled);
		if (cancelled)
			return SCARD_E_CANCELLED;
		if (st == CALAIS__HID_TIMEOUT)
			return SCARD_E_TIMEOUT;
		if (st != CALAIS__HID_OK)
			return io_rv(c, st, "read");
		uint32_t pc = be32(rep);
		if (pc != cid) {
			hid_dbg("%s: packet for channel %08X dropped (ours: %08X)", c->name, pc, cid);
			continue;
		}
		if (!(rep[4] & 0x80)) {
			hid_dbg("%s: continuation packet %u without a message start dropped", c->name,
			        rep[4]);
			continue;
		}
		break;
	}
	*cmd = rep[4];
	size_t len = (size_t)rep[5] << 8 | rep[6];
	if (len > CALAIS__CTAPHID_MAX_MSG) {
		hid_warn("%s: device announced a %zu-byte message (at most %u)", c->name, len,
		         CALAIS__CTAPHID_MAX_MSG);
		c->cid = 0;
		return SCARD_F_COMM_ERROR;
	}
	size_t got = len < 57 ? len : 57;
	memcpy(c->msg, rep + 7, got);
	for (unsigned seq = 0; got < len; seq++) {
		enum calais__hid_status st;
		for (;;) {
			st = calais__hid_read_until(c->ops, c->h, rep,
			                            min64(calais__now_ms() + CALAIS__CTAPHID_PACKET_MS,
			                                  deadline_ms),
			                            c->cancel, &cancelled);
			if (st != CALAIS__HID_OK || cancelled || be32(rep) == cid)
				break;
			hid_dbg("%s: packet for channel %08X dropped (ours: %08X)", c->name,
			        be32(rep), cid);
		}
		if (cancelled)
			return SCARD_E_CANCELLED;
		if (st == CALAIS__HID_TIMEOUT) {
			hid_warn("%s: message cut short: %zu of %zu bytes, no packet within %u ms",
			         c->name, got, len, CALAIS__CTAPHID_PACKET_MS);
			c->cid = 0;
			return SCARD_F_COMM_ERROR;
		}
		if (st != CALAIS__HID_OK)
			return io_rv(c, st, "read");
		if (rep[4] & 0x80) {
			hid_warn("%s: new message (command 0x%02X) after %zu of %zu bytes", c->name,
			         rep[4], got, len);
			c->cid = 0;
			return SCARD_F_COMM_ERROR;
		}
		if (rep[4] != seq) {
			hid_warn("%s: continuation packet %u where %u was due", c->name, rep[4], seq);
			c->cid = 0;
			return SCARD_F_COMM_ERROR;
		}
		size_t k = len - got < 59 ? len - got : 59;
		memcpy(c->msg + got, rep + 5, k);
		got += k;
	}
	c->msg_len = len;
	return SCARD_S_SUCCESS;
}

static void sleep_cancellable(const struct calais__ctaphid *c, uint32_t ms)
{
	if (c->pause) {
		c->pause(c, ms);
		return;
	}
	uint64_t end = calais__now_ms() + ms;
	while (calais__now_ms() < end && !(c->cancel && atomic_load(c->cancel)))
		calais__sleep_us(CALAIS__HID_SLICE_MS * 1000u);
}

LONG calais__ctaphid_open(struct calais__ctaphid *c, uint64_t deadline_ms)
{
	uint64_t busy_until = calais__now_ms() + CALAIS__CTAPHID_BUSY_MS;
	for (;;) {
		uint8_t nonce[8];
		(c->nonce ? c->nonce : default_nonce)(nonce, sizeof(nonce));
		c->cid = 0;
		LONG rv = send_msg(c, CALAIS__CTAPHID_BROADCAST, CALAIS__CTAPHID_INIT, nonce,
		                   sizeof(nonce));
		if (rv != SCARD_S_SUCCESS)
			return rv;
		uint64_t sent = calais__now_ms();
		uint64_t first = min64(sent + CALAIS__CTAPHID_ANSWER_MS, deadline_ms);
		bool busy = false;
		unsigned dropped = 0;
		for (;;) {
			uint8_t cmd;
			rv = recv_msg(c, CALAIS__CTAPHID_BROADCAST, &cmd, first, deadline_ms);
			if (rv == SCARD_E_TIMEOUT) {
				hid_warn("%s: no answer to CTAPHID_INIT with our nonce within %u ms "
				         "(%u other broadcast message(s) dropped)", c->name,
				         (unsigned)(first > sent ? first - sent : 0), dropped);
				return SCARD_W_UNRESPONSIVE_CARD;
			}
			if (rv != SCARD_S_SUCCESS)
				return rv;
			if (cmd == CALAIS__CTAPHID_ERROR && c->msg_len >= 1 && c->msg[0] == 0x06) {
				busy = true;
				break;
			}
			if (cmd != CALAIS__CTAPHID_INIT || c->msg_len < 17 ||
			    memcmp(c->msg, nonce, sizeof(nonce)) != 0) {
				/* Another program's channel allocation, or an answer to an INIT we
				 * gave up on: not ours. */
				hid_dbg("%s: broadcast message 0x%02X (%zu bytes) without our nonce "
				        "dropped", c->name, cmd, c->msg_len);
				dropped++;
				continue;
			}
			uint32_t cid = be32(c->msg + 8);
			if (cid == 0 || cid == CALAIS__CTAPHID_BROADCAST) {
				hid_warn("%s: CTAPHID_INIT gave the reserved channel %08X", c->name, cid);
				return SCARD_F_COMM_ERROR;
			}
			c->cid = cid;
			c->version = c->msg[12];
			c->major = c->msg[13];
			c->minor = c->msg[14];
			c->build = c->msg[15];
			c->caps = c->msg[16];
			hid_dbg("%s: channel %08X, CTAPHID %u, device %u.%u.%u, capabilities 0x%02X",
			        c->name, cid, c->version, c->major, c->minor, c->build, c->caps);
			return SCARD_S_SUCCESS;
		}
		if (busy) {
			if (calais__now_ms() + CALAIS__CTAPHID_BUSY_RETRY_MS >= min64(busy_until,
			                                                              deadline_ms)) {
				hid_warn("%s: channel allocation refused: busy for %u ms (another "
				         "program is using the authenticator)", c->name,
				         CALAIS__CTAPHID_BUSY_MS);
				return SCARD_E_SHARING_VIOLATION;
			}
			sleep_cancellable(c, CALAIS__CTAPHID_BUSY_RETRY_MS);
			if (c->cancel && atomic_load(c->cancel))
				return SCARD_E_CANCELLED;
		}
	}
}

void calais__ctaphid_abandon(struct calais__ctaphid *c)
{
	if (c->cid) {
		/* Best effort: a device that cannot take it is lost anyway. */
		uint8_t rep[CALAIS__HID_REPORT] = { 0 };
		put32(rep, c->cid);
		rep[4] = CALAIS__CTAPHID_CANCEL;
		c->ops->write(c->h, rep, sizeof(rep));
	}
	c->cid = 0;
}

enum { RETRY_NONE, RETRY_BUSY, RETRY_CHANNEL };

static LONG device_error(struct calais__ctaphid *c, uint8_t code, int *retry)
{
	static const struct {
		uint8_t code;
		LONG rv;
		const char *what;
	} map[] = {
		{ 0x01, SCARD_E_UNSUPPORTED_FEATURE, "invalid command" },
		{ 0x02, SCARD_F_COMM_ERROR, "invalid parameter" },
		{ 0x03, SCARD_F_COMM_ERROR, "invalid length" },
		{ 0x04, SCARD_F_COMM_ERROR, "invalid sequence" },
		{ 0x05, SCARD_F_COMM_ERROR, "message timeout" },
		{ 0x0A, SCARD_E_SHARING_VIOLATION, "lock required (another program holds the lock)" },
	};
	if (code == 0x06) {
		*retry = RETRY_BUSY;
		return SCARD_S_SUCCESS;
	}
	if (code == 0x0B) {
		*retry = RETRY_CHANNEL;
		return SCARD_S_SUCCESS;
	}
	for (size_t i = 0; i < CALAIS__ARRAY_SIZE(map); i++)
		if (map[i].code == code) {
			hid_info("%s: device error 0x%02X: %s", c->name, code, map[i].what);
			return map[i].rv;
		}
	hid_warn("%s: device error 0x%02X (%s)", c->name, code, code == 0x7F ? "other" : "unknown");
	return SCARD_F_COMM_ERROR;
}

static LONG wait_answer(struct calais__ctaphid *c, uint8_t cmd, enum calais__ctaphid_ka ka,
                        uint8_t *resp_cmd, uint8_t *ka_status, uint64_t deadline_ms, int *retry)
{
	*retry = RETRY_NONE;
	for (;;) {
		uint64_t first = min64(calais__now_ms() + CALAIS__CTAPHID_ANSWER_MS, deadline_ms);
		uint8_t rc;
		LONG rv = recv_msg(c, c->cid, &rc, first, deadline_ms);
		if (rv == SCARD_E_TIMEOUT) {
			if (calais__now_ms() >= deadline_ms)
				hid_warn("%s: exchange limit reached waiting for the answer to 0x%02X",
				         c->name, cmd);
			else
				hid_warn("%s: no answer to 0x%02X and no keepalive within %u ms",
				         c->name, cmd, CALAIS__CTAPHID_ANSWER_MS);
			calais__ctaphid_abandon(c);
			return SCARD_E_TIMEOUT;
		}
		if (rv == SCARD_E_CANCELLED) {
			calais__ctaphid_abandon(c);
			return rv;
		}
		if (rv != SCARD_S_SUCCESS)
			return rv;
		if (rc == CALAIS__CTAPHID_KEEPALIVE) {
			uint8_t status = c->msg_len ? c->msg[0] : 0;
			if (ka == CALAIS__CTAPHID_KA_RETURN) {
				*resp_cmd = rc;
				*ka_status = status;
				return SCARD_S_SUCCESS;
			}
			continue;
		}
		if (rc == CALAIS__CTAPHID_ERROR)
			return device_error(c, c->msg_len ? c->msg[0] : 0x7F, retry);
		if (rc != cmd) {
			hid_warn("%s: answer 0x%02X to command 0x%02X", c->name, rc, cmd);
			calais__ctaphid_abandon(c);
			return SCARD_F_COMM_ERROR;
		}
		*resp_cmd = rc;
		return SCARD_S_SUCCESS;
	}
}

static LONG call(struct calais__ctaphid *c, uint8_t cmd, const uint8_t *data, size_t len,
                 bool resume, enum calais__ctaphid_ka ka, uint8_t *resp_cmd,
                 uint8_t *ka_status, uint64_t deadline_ms)
{
	uint64_t busy_until = calais__now_ms() + CALAIS__CTAPHID_BUSY_MS;
	bool reopened = false;
	for (;;) {
		LONG rv;
		if (!resume) {
			if (!c->cid && (rv = calais__ctaphid_open(c, deadline_ms)) != SCARD_S_SUCCESS)
				return rv;
			if ((rv = send_msg(c, c->cid, cmd, data, len)) != SCARD_S_SUCCESS)
				return rv;
		} else if (!c->cid) {
			/* The channel was given up meanwhile: its answer is lost. */
			return SCARD_F_COMM_ERROR;
		}
		int retry;
		rv = wait_answer(c, cmd, ka, resp_cmd, ka_status, deadline_ms, &retry);
		if (rv != SCARD_S_SUCCESS || retry == RETRY_NONE)
			return rv;
		if (resume) {
			/* Busy or lost while our command ran: it cannot be sent again here. */
			hid_warn("%s: device error 0x%02X while a command ran", c->name,
			         retry == RETRY_BUSY ? 0x06 : 0x0B);
			c->cid = 0;
			return SCARD_F_COMM_ERROR;
		}
		if (retry == RETRY_CHANNEL) {
			if (reopened) {
				hid_warn("%s: device refused a fresh channel (invalid channel twice)",
				         c->name);
				c->cid = 0;
				return SCARD_F_COMM_ERROR;
			}
			hid_info("%s: channel %08X lost (device reset?): allocating another", c->name,
			         c->cid);
			reopened = true;
			c->cid = 0;
			continue;
		}
		if (calais__now_ms() + CALAIS__CTAPHID_BUSY_RETRY_MS >= min64(busy_until, deadline_ms)) {
			hid_warn("%s: channel busy for %u ms (another program is using the "
			         "authenticator)", c->name, CALAIS__CTAPHID_BUSY_MS);
			return SCARD_E_SHARING_VIOLATION;
		}
		sleep_cancellable(c, CALAIS__CTAPHID_BUSY_RETRY_MS);
		if (c->cancel && atomic_load(c->cancel))
			return SCARD_E_CANCELLED;
	}
}

LONG calais__ctaphid_call(struct calais__ctaphid *c, uint8_t cmd, const uint8_t *data,
                          size_t len, enum calais__ctaphid_ka ka, uint8_t *resp_cmd,
                          uint8_t *ka_status, uint64_t deadline_ms)
{
	return call(c, cmd, data, len, false, ka, resp_cmd, ka_status, deadline_ms);
}

LONG calais__ctaphid_resume(struct calais__ctaphid *c, uint8_t cmd, enum calais__ctaphid_ka ka,
                            uint8_t *resp_cmd, uint8_t *ka_status, uint64_t deadline_ms)
{
	return call(c, cmd, NULL, 0, true, ka, resp_cmd, ka_status, deadline_ms);
}
