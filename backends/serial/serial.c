/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The serial reader backend: readers declared by their port (serial readers cannot be
 * enumerated), CCID over a UART with the GemPC Twin / Pinpad framing (03 06 <CCID
 * message> <LRC>, the reader's echo, NAK and resend, card movement bytes 50 02/50 03), a
 * CCID descriptor synthesised for the model, and the whole CCID message and slot layers
 * of the USB backend reused (backends/ccid/ccid-msg.c, ccid-slot.c). Declared with
 * cfg.serial_readers or CALAIS_SERIAL_READERS: "device:protocol[:model],...".
 *
 * Threads and locks. Each reader has its own port and port.lock, taken by the slot layer
 * around each call of the core (one at a time per reader) and by the retry thread while
 * it opens a closed port; nothing is shared between readers across I/O. sp->lock only
 * guards the retry thread's sleep and is never held with a port.lock. The retry thread
 * skips a reader in a call and never waits on an exchange (a closed port's calls fail at
 * once). Every wait is a calais__serial_recv/send: slices of CALAIS__SERIAL_SLICE_MS that
 * end on cancel() or at the exchange's deadline. */
#include "serial-int.h"

#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#define RETRY_MS 2000      /* a missing or busy port is tried again this often */
#define ECHO_TIMEOUT_MS 2000
#define BYTE_TIMEOUT_MS 1000
#define MAX_NAKS 3
#define MAX_GARBAGE 600    /* bytes skipped looking for a frame before giving up */
#define MAX_DECLARED 16
/* A GemPC reader times the ATR itself and answers a mute card with ICC_MUTE within a
 * second or two: one still silent after this is stuck, and the power-up ends. */
#define GEM_POWER_ON_MS 5000
/* The abort of a command given up on at the deadline still gets this long, so the
 * reader is told and its state stays known. */
#define ABORT_GRACE_MS 300

/* The models libccid drives over serial, with what their descriptors would say. */
struct calais__gem_model {
	const char *key, *name;
	uint32_t max_rate;
	uint8_t pin_support;
};
static const struct calais__gem_model models[] = {
	{ "GemPCTwin", "GemPC Twin", 344086, 0 },
	{ "GemPCPinPad", "GemPC Pinpad", 500000, 3 },
};

struct serial_priv {
	calais_backend_instance *bi;
	struct calais__sreader *readers[MAX_DECLARED];
	size_t n;
	calais__mutex_t lock;
	calais__cond_t cond;
	atomic_bool stop;  /* set under lock; read without it by the waits of every port */
	calais__thread_t retry;
	bool retry_running;
};

/* ---- framing ------------------------------------------------------------------------ */

bool calais__serial_port_open(struct calais__sreader *s, uint32_t bps,
                              enum calais__serial_parity parity, bool mark_errors,
                              calais__serial_t **fd)
{
	LONG rv = calais__serial_open(s->path, bps, parity, 2, mark_errors, fd);
	if (rv == SCARD_S_SUCCESS)
		return true;
	if (!s->down_logged)
		ser_log(CALAIS_LOG_WARNING, "%s: cannot open the port (%s); the reader stays listed, "
		        "unavailable, and the port is tried again every %u s", s->path,
		        rv == SCARD_E_READER_UNAVAILABLE  ? "no such device"
		        : rv == SCARD_E_SHARING_VIOLATION ? "in use by another process"
		        : rv == SCARD_E_NO_ACCESS         ? "permission denied"
		                                          : pcsc_stringify_error(rv),
		        RETRY_MS / 1000);
	s->down_logged = true;
	return false;
}

/* A failed port call: a device gone closes the port (the retry thread reopens it); a
 * timeout or a cancel is the caller's to judge; anything else is a communication
 * error. */
static LONG io_rv(struct calais__sreader *s, LONG rv, const char *what)
{
	switch (rv) {
	case SCARD_S_SUCCESS:
	case SCARD_E_TIMEOUT:
	case SCARD_E_CANCELLED:
	case SCARD_W_REMOVED_CARD:
		return rv;
	case SCARD_E_READER_UNAVAILABLE:
		calais__serial_lost(s, what);
		return SCARD_E_READER_UNAVAILABLE;
	default:
		ser_log(CALAIS_LOG_WARNING, "%s: %s failed", s->path, what);
		return SCARD_F_COMM_ERROR;
	}
}

void calais__serial_lost(struct calais__sreader *s, const char *why)
{
	/* Closed here, reopened (and greeted again) by the retry thread once the port
	 * answers: an unplugged adapter, or a reader that stopped talking. */
	ser_log(CALAIS_LOG_WARNING, "%s: port lost (%s); the reader is unavailable until it "
	        "answers again (tried every %u s)", s->path, why, RETRY_MS / 1000);
	calais__serial_close(s->fd);
	s->open = false;
	s->port.gone = true;
	if (s->r) {
		calais_reader_set_unavailable(s->r, SCARD_E_READER_UNAVAILABLE);
		calais_reader_card_event(s->r, false);
	}
}

/* The deadline, or the grace of an abort sent at it. */
static uint64_t deadline(const struct calais__sreader *s)
{
	uint64_t d = s->deadline_ms;
	return d && s->grace_ms > d ? s->grace_ms : d;
}

bool calais__serial_late(struct calais__sreader *s)
{
	uint64_t d = deadline(s);
	return d && calais__now_ms() >= d;
}

/* The wait of the next slice: up to `until`, never past the deadline. */
static uint32_t slice(struct calais__sreader *s, uint64_t until)
{
	uint64_t now = calais__now_ms(), end = until, d = deadline(s);
	if (d && d < end)
		end = d;
	uint64_t left = end > now ? end - now : 0;
	return left < CALAIS__SERIAL_SLICE_MS ? (uint32_t)left : CALAIS__SERIAL_SLICE_MS;
}

/* What ends a wait from outside: cancel(), the backend stopping, a Phoenix card pulled. */
static LONG interrupted(struct calais__sreader *s)
{
	if (s->port.cancel || s->sp->stop)
		return SCARD_E_CANCELLED;
	if (!s->gem && s->ph.watch)
		return calais__phoenix_watch(s);
	return SCARD_S_SUCCESS;
}

/* One port transfer (read, or write of `out`) by slices: each byte within timeout_ms of
 * the previous one (or of the start), never past the deadline. */
static LONG transfer(struct calais__sreader *s, uint8_t *in, const uint8_t *out, size_t n,
                     uint32_t timeout_ms)
{
	size_t done = 0;
	uint64_t until = calais__now_ms() + timeout_ms;
	for (;;) {
		LONG rv = interrupted(s);
		if (rv != SCARD_S_SUCCESS)
			return rv;
		size_t k = 0;
		uint32_t wait = slice(s, until);
		rv = in ? calais__serial_read(s->fd, in + done, n - done, &k, wait)
		        : calais__serial_write(s->fd, out + done, n - done, &k, wait);
		done += k;
		if (rv != SCARD_E_TIMEOUT)
			return rv;
		if (k)
			until = calais__now_ms() + timeout_ms;
		else if (calais__now_ms() >= until || calais__serial_late(s))
			return SCARD_E_TIMEOUT;
	}
}

LONG calais__serial_recv(struct calais__sreader *s, uint8_t *b, size_t n, uint32_t timeout_ms)
{
	return transfer(s, b, NULL, n, timeout_ms);
}

LONG calais__serial_send(struct calais__sreader *s, const uint8_t *b, size_t n,
                         uint32_t timeout_ms)
{
	return transfer(s, NULL, b, n, timeout_ms);
}

/* A card movement byte pair read, reported. A removal while a card exchange (xfr) waits
 * for its answer ends it at once with SCARD_W_REMOVED_CARD (the core does not cancel a
 * call for an event the call reported itself). */
static LONG card_moved(struct calais__sreader *s, bool inserted, bool xfr)
{
	calais_reader_card_event(s->r, inserted);
	return !inserted && xfr ? SCARD_W_REMOVED_CARD : SCARD_S_SUCCESS;
}

/* Reads one frame (after skipping card-movement pairs, time-extension bytes and noise).
 * *nak: the reader rejected our frame. xfr: the answer to a card exchange is awaited. */
static LONG read_frame(struct calais__sreader *s, uint8_t *buf, size_t cap, size_t *n, bool *nak,
                       uint32_t first_ms, bool xfr)
{
	*n = 0;
	*nak = false;
	uint32_t wait = first_ms;
	for (unsigned skipped = 0;; skipped++) {
		if (skipped > MAX_GARBAGE) {
			ser_log(CALAIS_LOG_WARNING, "%s: no frame in %u bytes of noise", s->path, skipped);
			return SCARD_F_COMM_ERROR;
		}
		uint8_t b;
		LONG rv = io_rv(s, calais__serial_recv(s, &b, 1, wait), "read");
		if (rv != SCARD_S_SUCCESS)
			return rv;
		wait = BYTE_TIMEOUT_MS;
		if (b == 0x50) {
			/* Card movement, sent between frames. */
			uint8_t st;
			rv = io_rv(s, calais__serial_recv(s, &st, 1, BYTE_TIMEOUT_MS), "read");
			if (rv != SCARD_S_SUCCESS)
				return rv;
			if ((st == 0x02 || st == 0x03) &&
			    (rv = card_moved(s, st == 0x03, xfr)) != SCARD_S_SUCCESS)
				return rv;
			continue;
		}
		if (b != 0x03)
			continue; /* time-extension bytes (>= 0x80) and noise */
		uint8_t ctrl;
		rv = io_rv(s, calais__serial_recv(s, &ctrl, 1, BYTE_TIMEOUT_MS), "read");
		if (rv != SCARD_S_SUCCESS)
			return rv;
		if (ctrl == 0x15) {
			uint8_t lrc;
			rv = io_rv(s, calais__serial_recv(s, &lrc, 1, BYTE_TIMEOUT_MS), "read");
			if (rv != SCARD_S_SUCCESS)
				return rv;
			*nak = true;
			return SCARD_S_SUCCESS;
		}
		if (ctrl != 0x06)
			continue;
		uint8_t hdr[CALAIS__CCID_HEADER];
		rv = io_rv(s, calais__serial_recv(s, hdr, sizeof(hdr), BYTE_TIMEOUT_MS), "read");
		if (rv != SCARD_S_SUCCESS)
			return rv;
		uint32_t len = (uint32_t)hdr[1] | (uint32_t)hdr[2] << 8 | (uint32_t)hdr[3] << 16 |
		               (uint32_t)hdr[4] << 24;
		if (len > cap - CALAIS__CCID_HEADER) {
			ser_log(CALAIS_LOG_WARNING, "%s: frame announces %u data bytes", s->path, len);
			calais__serial_flush(s->fd);
			return SCARD_F_COMM_ERROR;
		}
		memcpy(buf, hdr, sizeof(hdr));
		uint8_t lrc;
		rv = io_rv(s, calais__serial_recv(s, buf + sizeof(hdr), len, BYTE_TIMEOUT_MS),
		           "read");
		if (rv == SCARD_S_SUCCESS)
			rv = io_rv(s, calais__serial_recv(s, &lrc, 1, BYTE_TIMEOUT_MS), "read");
		if (rv == SCARD_E_TIMEOUT && !calais__serial_late(s))
			return SCARD_F_COMM_ERROR; /* a frame cut short */
		if (rv != SCARD_S_SUCCESS)
			return rv;
		uint8_t x = 0x03 ^ 0x06;
		for (size_t i = 0; i < sizeof(hdr) + len; i++)
			x ^= buf[i];
		if (x != lrc) {
			/* libccid only logs this; a corrupted answer is not an answer. */
			ser_log(CALAIS_LOG_WARNING, "%s: frame checksum 0x%02X, expected 0x%02X", s->path,
			        lrc, x);
			return SCARD_F_COMM_ERROR;
		}
		*n = sizeof(hdr) + len;
		return SCARD_S_SUCCESS;
	}
}

static LONG write_last(struct calais__sreader *s)
{
	return io_rv(s, calais__serial_send(s, s->last, s->last_len, ECHO_TIMEOUT_MS), "write");
}

/* struct calais__ccid_port send: the frame, then its echo, resent on a NAK. */
static LONG ser_send(void *user, const uint8_t *msg, size_t n, uint32_t timeout_ms)
{
	struct calais__sreader *s = user;
	(void)timeout_ms; /* the echo is immediate: ECHO_TIMEOUT_MS, and the deadline */
	if (!s->open)
		return SCARD_E_READER_UNAVAILABLE;
	if (n + 3 > sizeof(s->last))
		return SCARD_E_INSUFFICIENT_BUFFER;
	if (msg[0] != CALAIS__PC_ABORT)
		s->grace_ms = 0;
	if (calais__serial_late(s)) {
		if (msg[0] != CALAIS__PC_ABORT) {
			s->resync = true;
			return SCARD_E_TIMEOUT;
		}
		s->grace_ms = calais__now_ms() + ABORT_GRACE_MS;
	}
	if (s->resync) {
		/* The answer to a command given up on may still come: not as this echo. */
		calais__serial_flush(s->fd);
		s->resync = false;
	}
	s->last[0] = 0x03;
	s->last[1] = 0x06;
	memcpy(s->last + 2, msg, n);
	uint8_t x = 0;
	for (size_t i = 0; i < n + 2; i++)
		x ^= s->last[i];
	s->last[n + 2] = x;
	s->last_len = n + 3;
	for (unsigned naks = 0;; naks++) {
		LONG rv = write_last(s);
		if (rv != SCARD_S_SUCCESS)
			return rv;
		uint8_t echo[sizeof(s->last)];
		size_t got;
		bool nak;
		rv = read_frame(s, echo, sizeof(echo), &got, &nak, ECHO_TIMEOUT_MS, false);
		if (rv == SCARD_E_TIMEOUT && !calais__serial_late(s)) {
			/* A reader that stops echoing has stopped: closed, and reopened (and greeted
			 * again) by the retry thread once it answers. */
			calais__serial_lost(s, "no echo from the reader");
			return SCARD_E_READER_UNAVAILABLE;
		}
		if (rv != SCARD_S_SUCCESS) {
			s->resync = s->open;
			return rv;
		}
		if (nak) {
			if (naks + 1 >= MAX_NAKS) {
				ser_log(CALAIS_LOG_WARNING, "%s: %u NAKs in a row", s->path, naks + 1);
				return SCARD_F_COMM_ERROR;
			}
			ser_log(CALAIS_LOG_DEBUG, "%s: NAK; frame sent again", s->path);
			continue;
		}
		if (got != n || memcmp(echo, msg, n) != 0) {
			ser_log(CALAIS_LOG_WARNING, "%s: the echo differs from the frame sent", s->path);
			return SCARD_F_COMM_ERROR;
		}
		return SCARD_S_SUCCESS;
	}
}

/* struct calais__ccid_port recv: the answer frame. */
static LONG ser_recv(void *user, uint8_t *buf, size_t cap, size_t *n, uint32_t timeout_ms)
{
	struct calais__sreader *s = user;
	if (!s->open)
		return SCARD_E_READER_UNAVAILABLE;
	bool xfr = s->last[2] == CALAIS__PC_XFR_BLOCK || s->last[2] == CALAIS__PC_SECURE;
	for (unsigned naks = 0;; naks++) {
		bool nak;
		LONG rv = read_frame(s, buf, cap, n, &nak, timeout_ms, xfr);
		if (rv != SCARD_S_SUCCESS)
			s->resync = s->open;
		if (rv != SCARD_S_SUCCESS || !nak)
			return rv;
		/* The reader rejected our frame after its echo: send it again. */
		if (naks + 1 >= MAX_NAKS || (rv = write_last(s)) != SCARD_S_SUCCESS)
			return rv != SCARD_S_SUCCESS ? rv : SCARD_F_COMM_ERROR;
	}
}

/* ---- opening ----------------------------------------------------------------------------- */

/* Opens the port and greets the reader as libccid does; port.lock held. */
static bool gem_open(struct calais__sreader *s)
{
	calais__serial_t *fd;
	if (!calais__serial_port_open(s, 115200, CALAIS__PARITY_NONE, false, &fd))
		return false;
	/* RTS low stops the reader's plug-and-play identification string. */
	calais__serial_rts(fd, false);
	s->fd = fd;
	s->open = true;
	s->port.gone = false;
	s->port.cancel = false;
	struct calais__ccid_reply r;
	/* Escape 02: firmware version; no answer means no reader on that port. */
	static const uint8_t fw[] = { 0x02 }, notify[] = { 0x01, 0x01, 0x01 };
	LONG rv = calais__ccid_command(&s->port, CALAIS__PC_ESCAPE, 0, NULL, fw, 1, &r, 2000);
	if (rv != SCARD_S_SUCCESS) {
		if (!s->down_logged)
			ser_log(CALAIS_LOG_WARNING, "%s: no %s answers (%s); tried again every %u s",
			        s->path, s->model_name, pcsc_stringify_error(rv), RETRY_MS / 1000);
		s->down_logged = true;
		if (s->open)
			calais__serial_close(s->fd);
		s->open = false;
		return false;
	}
	ser_log(CALAIS_LOG_INFO, "%s: %s, firmware \"%.*s\"", s->path, s->model_name, (int)r.len,
	        (const char *)r.data);
	/* Card movement bytes after each answer, as libccid asks for them. */
	calais__ccid_command(&s->port, CALAIS__PC_ESCAPE, 0, NULL, notify, 3, &r, 2000);
	s->down_logged = false;
	return true;
}

static bool open_reader(struct calais__sreader *s)
{
	return s->gem ? gem_open(s) : calais__phoenix_open(s);
}

/* The retry thread's attempt. A closed port's calls fail at once, so port.lock is never
 * held long by anyone but us here; the slot's status is read under the same hold, so
 * the thread never waits on a reader's exchange. */
static void try_open(struct calais__sreader *s)
{
	calais__mutex_lock(&s->port.lock);
	bool ok = !s->open && open_reader(s), present = false;
	if (ok) {
		struct calais__ccid_reply rep;
		LONG rv = calais__ccid_command(&s->port, CALAIS__PC_GET_SLOT_STATUS, s->slot.index,
		                               NULL, NULL, 0, &rep, ECHO_TIMEOUT_MS);
		/* A failed GetSlotStatus still carries the card status bits. */
		present = (rv == SCARD_S_SUCCESS || rep.type == CALAIS__RDR_SLOT_STATUS) &&
		          (rep.status & 3) != 2;
		if (!present)
			s->slot.powered = false;
	}
	calais__mutex_unlock(&s->port.lock);
	if (!ok)
		return;
	calais_reader_set_unavailable(s->r, SCARD_S_SUCCESS);
	calais_reader_card_event(s->r, present);
}

static void *retry_main(void *arg)
{
	struct serial_priv *sp = arg;
	calais__mutex_lock(&sp->lock);
	while (!sp->stop) {
		calais__cond_wait_until(&sp->cond, &sp->lock, calais__now_ms() + RETRY_MS);
		if (sp->stop)
			break;
		calais__mutex_unlock(&sp->lock);
		for (size_t i = 0; i < sp->n && !sp->stop; i++) {
			struct calais__sreader *s = sp->readers[i];
			/* The port's loss was reported once (calais__serial_lost, or unavailable
			 * since declared): reporting it again each round would have the core
			 * cancel a call of the reader's just as it comes back. */
			if (!s->open && !s->in_call)
				try_open(s);
		}
		calais__mutex_lock(&sp->lock);
	}
	calais__mutex_unlock(&sp->lock);
	return NULL;
}

/* ---- declaration ------------------------------------------------------------------------- */

static void synthesise(struct calais__sreader *s)
{
	struct calais__ccid_desc *d = &s->desc;
	memset(d, 0, sizeof(*d));
	d->bcd_ccid = 0x0110;
	d->voltage_support = 7;
	d->protocols = 3;
	d->default_clock_khz = 4000;
	d->max_clock_khz = 4000;
	d->data_rate = 10752;
	d->max_data_rate = s->gem->max_rate;
	d->max_ifsd = 254;
	/* libccid's: TPDU level, automatic clock and baud, NAD other than 0. */
	d->features = 0x00010230;
	d->max_message_length = 271;
	d->pin_support = s->gem->pin_support;
	d->max_busy_slots = 1;
	calais__ccid_strategy(d, &s->st);
}

/* "device:protocol[:model or options]": the device path may hold colons itself, so the
 * protocol is found from the right. */
LONG calais__serial_parse_spec(const char *spec, char *dev, size_t cap, const char **proto,
                               const char **extra)
{
	static const char *const protocols[] = { "gemtwin", "phoenix", "smartmouse" };
	if (strlen(spec) >= cap) {
		ser_log(CALAIS_LOG_ERROR, "serial reader declaration too long");
		return SCARD_E_INVALID_VALUE;
	}
	snprintf(dev, cap, "%s", spec);
	*proto = *extra = NULL;
	for (int parts = 0; parts < 2 && !*proto; parts++) {
		char *colon = strrchr(dev, ':');
		if (!colon || colon == dev)
			break;
		for (size_t i = 0; i < CALAIS__ARRAY_SIZE(protocols); i++)
			if (strcasecmp(colon + 1, protocols[i]) == 0)
				*proto = protocols[i];
		if (!*proto && parts == 0)
			*extra = colon + 1; /* the last part was the model or options */
		*colon = 0;
		if (!*proto && parts == 1) {
			ser_log(CALAIS_LOG_ERROR, "%s: unknown serial protocol \"%s\" (gemtwin, phoenix, "
			        "smartmouse)", dev, colon + 1);
			return SCARD_E_INVALID_VALUE;
		}
	}
	if (!*proto || !*dev) {
		ser_log(CALAIS_LOG_ERROR, "\"%s\" is not device:protocol[:model]", spec);
		return SCARD_E_INVALID_VALUE;
	}
	return SCARD_S_SUCCESS;
}

/* A declared reader, its port not opened yet: m NULL for Phoenix / Smartmouse (opts:
 * their options). */
static LONG new_reader(struct serial_priv *sp, const struct calais__gem_model *m, bool smartmouse,
                       const char *path, const char *opts, struct calais__sreader **out)
{
	LONG rv;
	struct calais__sreader *s = calloc(1, sizeof(*s));
	if (!s)
		return SCARD_E_NO_MEMORY;
	s->sp = sp;
	s->gem = m;
	snprintf(s->path, sizeof(s->path), "%s", path);
	if (!m) {
		s->model_name = smartmouse ? "Smartmouse" : "Phoenix";
		if ((rv = calais__phoenix_config(s, smartmouse, opts)) != SCARD_S_SUCCESS) {
			free(s);
			return rv;
		}
	} else {
		s->model_name = m->name;
		synthesise(s);
		s->port.send = ser_send;
		s->port.recv = ser_recv;
	}
	s->port.user = s;
	s->port.name = s->path;
	s->slot = (struct calais__ccid_slot){ .port = &s->port, .desc = &s->desc, .st = &s->st };
	if (!m)
		calais__phoenix_setup(s);
	if (calais__ccid_port_init(&s->port, s->desc.max_message_length) != SCARD_S_SUCCESS) {
		free(s);
		return SCARD_E_NO_MEMORY;
	}
	*out = s;
	return SCARD_S_SUCCESS;
}

static LONG declare(struct serial_priv *sp, const char *spec)
{
	char buf[256];
	const char *proto, *extra;
	LONG rv = calais__serial_parse_spec(spec, buf, sizeof(buf), &proto, &extra);
	if (rv != SCARD_S_SUCCESS)
		return rv;
	const struct calais__gem_model *m = NULL;
	if (strcmp(proto, "gemtwin") == 0) {
		m = &models[0];
		if (extra) {
			m = NULL;
			for (size_t i = 0; i < CALAIS__ARRAY_SIZE(models) && !m; i++)
				if (strcasecmp(models[i].key, extra) == 0)
					m = &models[i];
			if (!m) {
				ser_log(CALAIS_LOG_ERROR, "%s: unknown model \"%s\" (GemPCTwin, "
				        "GemPCPinPad)", buf, extra);
				return SCARD_E_INVALID_VALUE;
			}
		}
	}
	if (sp->n == MAX_DECLARED)
		return SCARD_E_NO_MEMORY;
	struct calais__sreader *s;
	if ((rv = new_reader(sp, m, strcmp(proto, "smartmouse") == 0, buf, extra, &s)) !=
	    SCARD_S_SUCCESS)
		return rv;

	struct calais_feature features[8];
	size_t n_features = calais__ccid_features(&s->slot, features);
	struct calais_reader_desc d = {
		.name = s->model_name,
		.interface_name = s->path,
		.vendor = m ? "Gemalto" : NULL,
		.channel_id = 0x00010000u, /* a serial port */
		.max_input = s->st.max_apdu,
		.flags = CALAIS_READER_POLL_PRESENCE,
		.protocols = SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1,
		.features = features,
		.n_features = n_features,
	};
	rv = calais_reader_new(sp->bi, &d, &s->r);
	if (rv != SCARD_S_SUCCESS) {
		calais__ccid_port_free(&s->port);
		free(s);
		return rv;
	}
	*(struct calais__sreader **)calais_reader_priv(s->r) = s;
	calais__mutex_lock(&s->port.lock);
	bool ok = open_reader(s);
	calais__mutex_unlock(&s->port.lock);
	if (!ok)
		calais_reader_set_unavailable(s->r, SCARD_E_READER_UNAVAILABLE);
	bool present = false;
	if (ok && calais__ccid_slot_status(&s->slot, &present) != SCARD_S_SUCCESS)
		present = false;
	sp->readers[sp->n++] = s;
	if (calais_reader_publish(s->r, present) != SCARD_S_SUCCESS) {
		sp->readers[--sp->n] = NULL;
		calais__ccid_port_free(&s->port);
		free(s);
	}
	return SCARD_S_SUCCESS;
}

static LONG serial_init(calais_backend_instance *bi)
{
	struct serial_priv *sp = calais_backend_priv(bi);
	sp->bi = bi;
	calais__mutex_init(&sp->lock);
	calais__cond_init(&sp->cond);
	const char *list = calais__mgr.cfg.serial_readers;
	if (!list)
		list = calais__getenv("CALAIS_SERIAL_READERS");
	if (!list || !*list) {
		ser_log(CALAIS_LOG_INFO, "no serial reader declared (CALAIS_SERIAL_READERS)");
		return SCARD_S_SUCCESS;
	}
	char *copy = strdup(list), *save = NULL;
	if (!copy)
		return SCARD_E_NO_MEMORY;
	for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		while (*tok == ' ')
			tok++;
		if (*tok)
			declare(sp, tok);
	}
	free(copy);
	if (sp->n && calais__thread_create(&sp->retry, retry_main, sp) == 0)
		sp->retry_running = true;
	return SCARD_S_SUCCESS;
}

static void serial_stop(calais_backend_instance *bi)
{
	struct serial_priv *sp = calais_backend_priv(bi);
	calais__mutex_lock(&sp->lock);
	sp->stop = true;
	calais__cond_broadcast(&sp->cond);
	calais__mutex_unlock(&sp->lock);
	if (sp->retry_running)
		calais__thread_join(sp->retry);
	sp->retry_running = false;
}

static void serial_exit(calais_backend_instance *bi)
{
	struct serial_priv *sp = calais_backend_priv(bi);
	calais__cond_destroy(&sp->cond);
	calais__mutex_destroy(&sp->lock);
}

static void serial_close(calais_reader *r)
{
	struct calais__sreader *s = *(struct calais__sreader **)calais_reader_priv(r);
	if (s->open) {
		if (s->slot.powered)
			calais__ccid_power_off(&s->slot);
		calais__serial_close(s->fd);
	}
	s->open = false;
	calais__ccid_port_free(&s->port);
	free(s);
}

#define S(r) (*(struct calais__sreader **)calais_reader_priv(r))

/* Every call starts here: a cancel() meant for the previous call is forgotten, and the
 * exchange's deadline set (timeout_ms 0: none; the protocol's own waits bound the call). */
static struct calais__sreader *call_begin(calais_reader *r, uint32_t timeout_ms)
{
	struct calais__sreader *s = S(r);
	s->in_call = true;
	s->port.cancel = false;
	s->deadline_ms = timeout_ms ? calais__now_ms() + timeout_ms : 0;
	return s;
}

static LONG call_end(struct calais__sreader *s, LONG rv)
{
	s->deadline_ms = 0;
	s->grace_ms = 0;
	s->in_call = false;
	return rv;
}

/* Phoenix: the ATR's own waits bound it (first byte, then each byte within the initial
 * waiting time). */
static LONG serial_power_on(calais_reader *r, bool warm, uint8_t *atr, size_t *atr_len)
{
	struct calais__sreader *s = call_begin(r, S(r)->gem ? GEM_POWER_ON_MS : 0);
	return call_end(s, calais__ccid_power_on(&s->slot, warm, atr, atr_len));
}

static LONG serial_power_off(calais_reader *r)
{
	struct calais__sreader *s = call_begin(r, 0);
	return call_end(s, calais__ccid_power_off(&s->slot));
}

static LONG serial_set_protocol(calais_reader *r, uint32_t protocol)
{
	struct calais__sreader *s = call_begin(r, 0);
	return call_end(s, calais__ccid_set_protocol(&s->slot, protocol));
}

/* timeout_ms: the exchange limit; every wait of the exchange (echoes, NAK resends, time
 * extensions, T=0 and T=1 byte waits, WTX) ends by it. */
static LONG serial_transmit(calais_reader *r, uint32_t protocol, const uint8_t *tx, size_t tx_len,
                            uint8_t *rx, size_t *rx_len, uint32_t timeout_ms)
{
	struct calais__sreader *s = call_begin(r, timeout_ms);
	s->slot.deadline_ms = s->deadline_ms; /* the engine's: its blocks, WTX, retries */
	LONG rv = calais__ccid_transmit(&s->slot, protocol, tx, tx_len, rx, rx_len);
	s->grace_ms = 0;
	if ((rv == SCARD_E_TIMEOUT || rv == SCARD_W_UNRESPONSIVE_CARD || rv == SCARD_F_COMM_ERROR) &&
	    calais__serial_late(s) && !s->port.cancel) {
		ser_log(CALAIS_LOG_WARNING, "%s: exchange limit of %u ms reached (%s)", s->path,
		        timeout_ms, pcsc_stringify_error(rv));
		rv = SCARD_E_TIMEOUT;
	}
	return call_end(s, rv);
}

static LONG serial_control(calais_reader *r, uint32_t code, const uint8_t *in, size_t in_len,
                           uint8_t *out, size_t out_cap, size_t *out_len)
{
	struct calais__sreader *s = call_begin(r, 0);
	return call_end(s, calais__ccid_control(&s->slot, code, in, in_len, out, out_cap, out_len));
}

/* The core polls presence; a closed port is an empty, unavailable reader meanwhile. */
static LONG serial_slot_status(calais_reader *r, bool *present)
{
	struct calais__sreader *s = call_begin(r, 0);
	*present = false;
	if (!s->open)
		return call_end(s, SCARD_S_SUCCESS);
	LONG rv = calais__ccid_slot_status(&s->slot, present);
	if (rv == SCARD_E_READER_UNAVAILABLE) {
		calais_reader_set_unavailable(r, SCARD_E_READER_UNAVAILABLE);
		*present = false;
		rv = SCARD_S_SUCCESS; /* declared readers stay listed */
	}
	return call_end(s, rv);
}

/* Any thread, while a call runs or just after: the call's waits see it within a slice.
 * Never blocks. */
static void serial_cancel(calais_reader *r)
{
	S(r)->port.cancel = true;
}

const struct calais_backend calais__backend_serial = {
	.abi_version = CALAIS_BACKEND_ABI_VERSION,
	.name = "serial",
	.caps = CALAIS_BACKEND_CAP_CARD_EVENTS | CALAIS_BACKEND_CAP_PINPAD,
	.instance_priv_size = sizeof(struct serial_priv),
	.reader_priv_size = sizeof(struct calais__sreader *),
	.init = serial_init,
	.stop = serial_stop,
	.exit = serial_exit,
	.close = serial_close,
	.power_on = serial_power_on,
	.power_off = serial_power_off,
	.set_protocol = serial_set_protocol,
	.transmit = serial_transmit,
	.control = serial_control,
	.slot_status = serial_slot_status,
	.cancel = serial_cancel,
};
