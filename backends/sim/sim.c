/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The simulated backend: readers and cards described in code, driven from any thread
 * through the public calais_sim_* API, reported to the core like real hardware. */
#include "calais-internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Escape code the simulated reader answers by echoing its input, so SCardControl() can
 * be exercised without hardware. */
#define SIM_CTL_ECHO SCARD_CTL_CODE(3500)

/* The user's handle on a reader. It lives as long as the reader (freed by close() after
 * an unplug) or, at shutdown, until exit(). Guarded by sim_priv.lock. */
struct calais_sim_reader {
	struct calais_sim_reader *next; /* instance list */
	calais_reader *reader;
	unsigned index;  /* unique in the instance: tells this handle from a later one */
	bool unplugged;  /* calais_sim_reader_unplug() began: the user's API refuses it */
	/* The core was told (calais_reader_remove()): calls in progress now end with
	 * SCARD_E_READER_UNAVAILABLE. Not before: the core answers that code by removing
	 * and closing the reader itself, which would free it under the unplugging thread. */
	bool gone;
	/* This reader's waits (latency, ATR delay, silence, busy reaching zero) sleep here,
	 * so one reader's events wake only its own waits. */
	calais__cond_t cond;
};

/* Per reader, in the core's private block. Card fields are guarded by the instance's
 * lock; apdu() and reset() run without it (busy keeps the card alive meanwhile), and
 * every wait on the card sleeps on handle->cond, releasing the lock: no lock is held
 * across one reader's simulated I/O, so readers never wait for each other. */
struct sim_reader_priv {
	struct calais_sim_reader *handle;
	unsigned index;
	bool has_card;
	bool powered;
	struct calais_sim_card card;
	uint8_t atr[MAX_ATR_SIZE];
	void *state;      /* per-insertion state block (card.state_size) */
	unsigned busy;    /* apdu()/reset() calls in progress on the card */
	bool cancel;      /* cancel() asked the call in progress to stop */
	uint64_t card_gen; /* bumped at every insertion and removal, and at unplug */
	uint32_t answered; /* APDUs answered since the last power-up (card.silent) */
};

struct sim_priv {
	calais__mutex_t lock;
	struct calais_sim_reader *readers;
	unsigned next_index;
	calais_backend_instance *bi;
};

static calais__mutex_t instance_lock = CALAIS__MUTEX_INIT;
static struct sim_priv *running; /* instance_lock */

static void *card_user(struct sim_reader_priv *p)
{
	return p->card.state_size ? p->state : p->card.user;
}

/* Drops the card; the caller holds the instance lock and no apdu() runs on it. */
static void drop_card(struct sim_reader_priv *p)
{
	free(p->state);
	p->state = NULL;
	p->has_card = false;
	p->powered = false;
	p->card_gen++;
}

static void free_handle(struct calais_sim_reader *h)
{
	calais__cond_destroy(&h->cond);
	free(h);
}

static LONG add_reader(struct sim_priv *sp, const char *name, calais_sim_reader **out)
{
	struct calais_sim_reader *h = calloc(1, sizeof(*h));
	if (!h)
		return SCARD_E_NO_MEMORY;
	calais__cond_init(&h->cond);

	calais__mutex_lock(&sp->lock);
	unsigned index = sp->next_index++;
	calais__mutex_unlock(&sp->lock);

	struct calais_reader_desc d = {
		.name = name,
		.vendor = "Calais",
		.ifd_version = 0x00010000,
		/* Channel type 0x00F0 is not one of the PC/SC ones: a virtual reader. */
		.channel_id = 0x00F00000u | (index & 0xFFFFu),
		.max_input = MAX_BUFFER_SIZE_EXTENDED,
		.slot = 0,
		.protocols = SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1 | SCARD_PROTOCOL_RAW,
	};
	calais_reader *r;
	LONG rv = calais_reader_new(sp->bi, &d, &r);
	if (rv != SCARD_S_SUCCESS) {
		free_handle(h);
		return rv;
	}
	struct sim_reader_priv *p = calais_reader_priv(r);
	p->handle = h;
	p->index = index;
	h->reader = r;
	h->index = index;

	calais__mutex_lock(&sp->lock);
	h->next = sp->readers;
	sp->readers = h;
	calais__mutex_unlock(&sp->lock);

	rv = calais_reader_publish(r, false);
	if (rv != SCARD_S_SUCCESS) {
		/* publish() freed the reader. */
		calais__mutex_lock(&sp->lock);
		for (struct calais_sim_reader **pp = &sp->readers; *pp; pp = &(*pp)->next)
			if (*pp == h) {
				*pp = h->next;
				break;
			}
		calais__mutex_unlock(&sp->lock);
		free_handle(h);
		return rv;
	}
	if (out)
		*out = h;
	return SCARD_S_SUCCESS;
}

static LONG sim_init(calais_backend_instance *bi)
{
	struct sim_priv *sp = calais_backend_priv(bi);
	calais__mutex_init(&sp->lock);
	sp->bi = bi;
	calais__mutex_lock(&instance_lock);
	running = sp;
	calais__mutex_unlock(&instance_lock);

	if (!calais__backend_configured(bi))
		return SCARD_S_SUCCESS;
	/* Listed in the configuration: one reader with the demo card, so any PC/SC program
	 * can be tried at once. */
	calais_sim_reader *h;
	LONG rv = add_reader(sp, "Calais Virtual Reader", &h);
	if (rv == SCARD_S_SUCCESS)
		rv = calais_sim_card_insert(h, calais_sim_democard());
	return rv;
}

static void sim_stop(calais_backend_instance *bi)
{
	struct sim_priv *sp = calais_backend_priv(bi);
	calais__mutex_lock(&instance_lock);
	if (running == sp)
		running = NULL;
	calais__mutex_unlock(&instance_lock);
}

static void sim_exit(calais_backend_instance *bi)
{
	struct sim_priv *sp = calais_backend_priv(bi);
	/* close() already detached every reader; free what the user did not unplug. */
	while (sp->readers) {
		struct calais_sim_reader *h = sp->readers;
		sp->readers = h->next;
		free_handle(h);
	}
	calais__mutex_destroy(&sp->lock);
}

static struct sim_priv *priv_of(calais_reader *r)
{
	return calais_backend_priv(calais_reader_backend(r));
}

static void sim_close(calais_reader *r)
{
	struct sim_priv *sp = priv_of(r);
	struct sim_reader_priv *p = calais_reader_priv(r);
	calais__mutex_lock(&sp->lock);
	while (p->busy)
		calais__cond_wait(&p->handle->cond, &sp->lock);
	drop_card(p);
	if (p->handle) {
		/* Unplugged by the user: the handle goes with the reader. Otherwise (shutdown)
		 * the handle stays listed until exit(). */
		if (p->handle->unplugged) {
			for (struct calais_sim_reader **pp = &sp->readers; *pp; pp = &(*pp)->next)
				if (*pp == p->handle) {
					*pp = p->handle->next;
					break;
				}
			free_handle(p->handle);
		} else {
			p->handle->reader = NULL;
		}
		p->handle = NULL;
	}
	calais__mutex_unlock(&sp->lock);
}

/* Waits, with the instance lock held (released while asleep), until the card of
 * generation gen is removed, the reader unplugged, cancel() called, or deadline_ms
 * passes (0: no deadline). Returns what ended the wait: SCARD_W_REMOVED_CARD,
 * SCARD_E_READER_UNAVAILABLE, SCARD_E_CANCELLED, or SCARD_E_TIMEOUT at the deadline. Every
 * one of these events broadcasts handle->cond, so the wait needs no polling. */
static LONG wait_card(struct sim_priv *sp, struct sim_reader_priv *p, uint64_t gen,
                      uint64_t deadline_ms)
{
	for (;;) {
		if (p->handle->gone)
			return SCARD_E_READER_UNAVAILABLE;
		if (p->card_gen != gen)
			return SCARD_W_REMOVED_CARD;
		if (p->cancel)
			return SCARD_E_CANCELLED;
		if (!deadline_ms)
			calais__cond_wait(&p->handle->cond, &sp->lock);
		else if (!calais__cond_wait_until(&p->handle->cond, &sp->lock, deadline_ms))
			return SCARD_E_TIMEOUT;
	}
}

static LONG sim_power_on(calais_reader *r, bool warm, uint8_t *atr, size_t *atr_len)
{
	struct sim_priv *sp = priv_of(r);
	struct sim_reader_priv *p = calais_reader_priv(r);
	(void)warm;

	calais__mutex_lock(&sp->lock);
	/* A cancel() meant for the previous call must not end this one. */
	p->cancel = false;
	p->powered = false;
	if (!p->has_card) {
		calais__mutex_unlock(&sp->lock);
		return SCARD_E_NO_SMARTCARD;
	}
	if (p->card.atr_delay_ms) {
		/* Pulled while its ATR is awaited: this power-up fails, as a reader's does; a
		 * card inserted meanwhile gets a power-up of its own from the core. */
		LONG rv = wait_card(sp, p, p->card_gen, calais__now_ms() + p->card.atr_delay_ms);
		if (rv != SCARD_E_TIMEOUT) {
			calais__mutex_unlock(&sp->lock);
			return rv;
		}
	}
	if (p->card.mute) {
		calais__mutex_unlock(&sp->lock);
		return SCARD_W_UNRESPONSIVE_CARD;
	}
	void (*reset)(void *) = p->card.reset;
	void *user = card_user(p);
	p->busy++;
	calais__mutex_unlock(&sp->lock);

	if (reset)
		reset(user);

	calais__mutex_lock(&sp->lock);
	p->busy--;
	calais__cond_broadcast(&p->handle->cond);
	LONG rv = SCARD_S_SUCCESS;
	if (p->handle->gone) {
		rv = SCARD_E_READER_UNAVAILABLE;
	} else if (!p->has_card) {
		rv = SCARD_E_NO_SMARTCARD;
	} else {
		memcpy(atr, p->atr, p->card.atr_len);
		*atr_len = p->card.atr_len;
		p->powered = true;
		p->answered = 0;
	}
	calais__mutex_unlock(&sp->lock);
	return rv;
}

static LONG sim_power_off(calais_reader *r)
{
	struct sim_priv *sp = priv_of(r);
	struct sim_reader_priv *p = calais_reader_priv(r);
	calais__mutex_lock(&sp->lock);
	p->powered = false;
	calais__mutex_unlock(&sp->lock);
	return SCARD_S_SUCCESS;
}

static LONG sim_transmit(calais_reader *r, uint32_t protocol, const uint8_t *tx, size_t tx_len,
                         uint8_t *rx, size_t *rx_len, uint32_t timeout_ms)
{
	struct sim_priv *sp = priv_of(r);
	struct sim_reader_priv *p = calais_reader_priv(r);
	(void)protocol;
	/* The exchange limit bounds the whole exchange; 0 (from an older core) means none. */
	uint64_t limit = timeout_ms ? calais__now_ms() + timeout_ms : 0;

	calais__mutex_lock(&sp->lock);
	/* A cancel() meant for the previous call must not end this one. */
	p->cancel = false;
	if (p->handle->gone) {
		calais__mutex_unlock(&sp->lock);
		return SCARD_E_READER_UNAVAILABLE;
	}
	if (!p->has_card) {
		calais__mutex_unlock(&sp->lock);
		return SCARD_W_REMOVED_CARD;
	}
	if (!p->powered) {
		calais__mutex_unlock(&sp->lock);
		return SCARD_W_UNPOWERED_CARD;
	}
	uint64_t gen = p->card_gen;
	if (p->card.silent && p->answered >= p->card.silent_after) {
		/* A hung card: no answer, ever; only the end of the card, the reader, the call
		 * or the exchange limit ends the wait. */
		LONG rv = wait_card(sp, p, gen, limit);
		calais__mutex_unlock(&sp->lock);
		return rv;
	}
	if (p->card.latency_us) {
		/* Latency is waited on the condition variable, so a removal or a cancel
		 * ends it at once, as a real reader reports a card pulled mid-exchange. */
		uint64_t until = calais__now_ms() + ((uint64_t)p->card.latency_us + 999u) / 1000u;
		bool limited = limit && limit < until;
		LONG rv = wait_card(sp, p, gen, limited ? limit : until);
		if (rv != SCARD_E_TIMEOUT || limited) {
			calais__mutex_unlock(&sp->lock);
			return rv;
		}
	}
	p->answered++;
	calais_sim_apdu_fn fn = p->card.apdu;
	void *user = card_user(p);
	p->busy++;
	calais__mutex_unlock(&sp->lock);

	/* The card gets at least 258 bytes of room (sim.h): a smaller caller buffer is
	 * bounced through the stack, and what does not fit is reported as such. */
	size_t cap = *rx_len;
	uint8_t small[258];
	uint8_t *buf = cap < sizeof(small) ? small : rx;
	size_t room = cap < sizeof(small) ? sizeof(small) : cap;
	size_t n = room;
	LONG rv = fn(user, tx, tx_len, buf, &n);
	if (rv == SCARD_S_SUCCESS && n > room) {
		calais_backend_log(calais_reader_backend(r), CALAIS_LOG_ERROR,
		                   "simulated card answered %zu bytes, more than its buffer", n);
		rv = SCARD_F_INTERNAL_ERROR;
	}
	if (rv == SCARD_S_SUCCESS) {
		if (n > cap)
			rv = SCARD_E_INSUFFICIENT_BUFFER;
		else if (buf == small)
			memcpy(rx, small, n);
		*rx_len = n;
	}

	calais__mutex_lock(&sp->lock);
	p->busy--;
	calais__cond_broadcast(&p->handle->cond);
	if (rv == SCARD_S_SUCCESS && p->handle->gone)
		rv = SCARD_E_READER_UNAVAILABLE;
	else if (rv == SCARD_S_SUCCESS && p->card_gen != gen)
		rv = SCARD_W_REMOVED_CARD;
	calais__mutex_unlock(&sp->lock);
	return rv;
}

static LONG sim_control(calais_reader *r, uint32_t code, const uint8_t *in, size_t in_len,
                        uint8_t *out, size_t out_cap, size_t *out_len)
{
	(void)r;
	if (code != SIM_CTL_ECHO)
		return SCARD_E_UNSUPPORTED_FEATURE;
	*out_len = in_len;
	if (in_len > out_cap)
		return SCARD_E_INSUFFICIENT_BUFFER;
	if (in_len)
		memcpy(out, in, in_len);
	return SCARD_S_SUCCESS;
}

static LONG sim_get_attrib(calais_reader *r, uint32_t id, uint8_t *buf, size_t *len)
{
	struct sim_reader_priv *p = calais_reader_priv(r);
	if (id != SCARD_ATTR_VENDOR_IFD_SERIAL_NO)
		return SCARD_E_UNSUPPORTED_FEATURE;
	char serial[32];
	int n = snprintf(serial, sizeof(serial), "SIM-%u", p->index);
	if ((size_t)n + 1 > *len) {
		*len = (size_t)n + 1;
		return SCARD_E_INSUFFICIENT_BUFFER;
	}
	memcpy(buf, serial, (size_t)n + 1);
	*len = (size_t)n + 1;
	return SCARD_S_SUCCESS;
}

static LONG sim_slot_status(calais_reader *r, bool *present)
{
	struct sim_priv *sp = priv_of(r);
	struct sim_reader_priv *p = calais_reader_priv(r);
	calais__mutex_lock(&sp->lock);
	*present = p->has_card;
	calais__mutex_unlock(&sp->lock);
	return SCARD_S_SUCCESS;
}

/* Called without the reader's I/O lock, while a call may be waiting on the card: only
 * the instance lock, held briefly (the waits release it while asleep). */
static void sim_cancel(calais_reader *r)
{
	struct sim_priv *sp = priv_of(r);
	struct sim_reader_priv *p = calais_reader_priv(r);
	calais__mutex_lock(&sp->lock);
	if (p->handle) {
		p->cancel = true;
		calais__cond_broadcast(&p->handle->cond);
	}
	calais__mutex_unlock(&sp->lock);
}

const struct calais_backend calais__backend_sim = {
	.abi_version = CALAIS_BACKEND_ABI_VERSION,
	.name = "sim",
	.caps = CALAIS_BACKEND_CAP_HOTPLUG | CALAIS_BACKEND_CAP_CARD_EVENTS |
	        CALAIS_BACKEND_CAP_EXTENDED,
	.instance_priv_size = sizeof(struct sim_priv),
	.reader_priv_size = sizeof(struct sim_reader_priv),
	.init = sim_init,
	.stop = sim_stop,
	.exit = sim_exit,
	.close = sim_close,
	.power_on = sim_power_on,
	.power_off = sim_power_off,
	.transmit = sim_transmit,
	.control = sim_control,
	.get_attrib = sim_get_attrib,
	.slot_status = sim_slot_status,
	.cancel = sim_cancel,
};

/* ---- public API ------------------------------------------------------------------- */

LONG calais_sim_reader_add(const char *name, calais_sim_reader **out)
{
	if (!name || !*name || !out)
		return SCARD_E_INVALID_PARAMETER;
	*out = NULL;
	calais_backend_instance *bi = calais__backend_activate(&calais__backend_sim);
	if (!bi)
		return SCARD_E_NO_SERVICE;
	return add_reader(calais_backend_priv(bi), name, out);
}

const char *calais_sim_reader_name(calais_sim_reader *h)
{
	if (!h || h->unplugged || !h->reader)
		return NULL;
	return calais_reader_name(h->reader);
}

/* The instance lock taken on behalf of a user handle; NULL when the backend is not
 * running (the handle is then stale). */
static struct sim_priv *lock_for(calais_sim_reader *h)
{
	calais__mutex_lock(&instance_lock);
	struct sim_priv *sp = running;
	if (sp)
		calais__mutex_lock(&sp->lock);
	calais__mutex_unlock(&instance_lock);
	return sp;
}

/* lock_for() for a reader that is still plugged; NULL with *rv set otherwise. */
static struct sim_priv *lock_live(calais_sim_reader *h, LONG *rv)
{
	if (!h) {
		*rv = SCARD_E_INVALID_PARAMETER;
		return NULL;
	}
	struct sim_priv *sp = lock_for(h);
	if (sp && (h->unplugged || !h->reader)) {
		calais__mutex_unlock(&sp->lock);
		sp = NULL;
	}
	if (!sp)
		*rv = SCARD_E_READER_UNAVAILABLE;
	return sp;
}

LONG calais_sim_card_insert(calais_sim_reader *h, const struct calais_sim_card *card)
{
	if (!card || !card->apdu || !card->atr || card->atr_len < 2 || card->atr_len > MAX_ATR_SIZE)
		return SCARD_E_INVALID_PARAMETER;
	LONG rv;
	struct sim_priv *sp = lock_live(h, &rv);
	if (!sp)
		return rv;
	calais_reader *r = h->reader;
	struct sim_reader_priv *p = calais_reader_priv(r);
	if (p->has_card) {
		calais__mutex_unlock(&sp->lock);
		return SCARD_E_SHARING_VIOLATION;
	}
	void *state = NULL;
	if (card->state_size) {
		state = calloc(1, card->state_size);
		if (!state) {
			calais__mutex_unlock(&sp->lock);
			return SCARD_E_NO_MEMORY;
		}
	}
	p->card = *card;
	memcpy(p->atr, card->atr, card->atr_len);
	p->card.atr = p->atr;
	p->state = state;
	p->has_card = true;
	p->powered = false;
	p->answered = 0;
	p->card_gen++;
	calais__mutex_unlock(&sp->lock);
	/* Reported without the instance lock: the core may call back into power_on(). */
	calais_reader_card_event(r, true);
	return SCARD_S_SUCCESS;
}

LONG calais_sim_card_remove(calais_sim_reader *h)
{
	LONG rv;
	struct sim_priv *sp = lock_live(h, &rv);
	if (!sp)
		return rv;
	calais_reader *r = h->reader;
	struct sim_reader_priv *p = calais_reader_priv(r);
	if (!p->has_card) {
		calais__mutex_unlock(&sp->lock);
		return SCARD_E_NO_SMARTCARD;
	}
	/* Wake a latency wait first, then wait for a running apdu() to finish with the
	 * card's state before it is freed. */
	p->card_gen++;
	calais__cond_broadcast(&h->cond);
	while (p->busy)
		calais__cond_wait(&h->cond, &sp->lock);
	drop_card(p);
	calais__mutex_unlock(&sp->lock);
	calais_reader_card_event(r, false);
	return SCARD_S_SUCCESS;
}

LONG calais_sim_reader_unplug(calais_sim_reader *h)
{
	LONG rv;
	struct sim_priv *sp = lock_live(h, &rv);
	if (!sp)
		return rv;
	h->unplugged = true;
	calais_reader *r = h->reader;
	unsigned index = h->index;
	calais__mutex_unlock(&sp->lock);
	/* The core then calls close(), which frees the handle, once no call is in progress
	 * on the reader; a call in progress may be waiting on the card. */
	calais_reader_remove(r);
	/* Ends those waits. The handle may be gone already (no call was in progress and
	 * close() ran): it is used only if it is still listed, under the same index. */
	calais__mutex_lock(&sp->lock);
	for (struct calais_sim_reader *it = sp->readers; it; it = it->next)
		if (it == h && it->index == index && it->reader) {
			h->gone = true;
			struct sim_reader_priv *p = calais_reader_priv(h->reader);
			p->card_gen++;
			calais__cond_broadcast(&h->cond);
			break;
		}
	calais__mutex_unlock(&sp->lock);
	return SCARD_S_SUCCESS;
}
