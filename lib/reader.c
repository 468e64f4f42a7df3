/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The reader registry: reader objects and their names, the helpers backends call to
 * report readers and card events, and the worker's deferred jobs on readers. */
#include "calais-internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define M (&calais__mgr)

static char *dupstr(const char *s)
{
	if (!s)
		return NULL;
	size_t n = strlen(s) + 1;
	char *d = malloc(n);
	if (d)
		memcpy(d, s, n);
	return d;
}


/* Appends pre, arg and post to a bounded string: n stays within cap - 1 however long
 * the parts are. */
static void append(char *b, size_t cap, size_t *n, const char *pre, const char *arg,
                   const char *post)
{
	const char *parts[3] = { pre, arg, post };
	for (int i = 0; i < 3; i++)
		for (const char *p = parts[i]; *p && *n + 1 < cap; p++)
			b[(*n)++] = *p;
	b[*n] = '\0';
}

LONG calais_reader_new(calais_backend_instance *bi, const struct calais_reader_desc *d,
                       calais_reader **out)
{
	if (!bi || !d || !d->name || !*d->name || !out || (d->n_features && !d->features))
		return SCARD_E_INVALID_PARAMETER;
	*out = NULL;

	size_t priv = bi->be->reader_priv_size;
	struct calais_reader *r = calloc(1, sizeof(*r) + priv);
	if (!r)
		return SCARD_E_NO_MEMORY;
	/* First, so every path out (calais_reader_discard() included) may destroy them. */
	calais__mutex_init(&r->io_lock);
	calais__mutex_init(&r->cancel_lock);
	calais__cond_init(&r->lock_cond);
	r->priv = priv ? (void *)(r + 1) : NULL;
	r->bi = bi;

	char base[MAX_READERNAME * 2];
	size_t n = 0;
	base[0] = '\0';
	append(base, sizeof(base), &n, "", d->name, "");
	if (d->interface_name && *d->interface_name)
		append(base, sizeof(base), &n, " [", d->interface_name, "]");
	if (d->serial && *d->serial && !(d->interface_name && strstr(d->interface_name, d->serial)))
		append(base, sizeof(base), &n, " (", d->serial, ")");
	/* Leave room for " XX YY" within MAX_READERNAME, NUL included. */
	base[MAX_READERNAME - 7] = '\0';
	calais__sanitise(base, ' ');

	r->base = dupstr(base);
	r->vendor = dupstr(d->vendor);
	if (d->n_features) {
		r->features = calloc(d->n_features, sizeof(*r->features));
		if (r->features)
			memcpy(r->features, d->features, d->n_features * sizeof(*r->features));
	}
	if (!r->base || (d->vendor && !r->vendor) || (d->n_features && !r->features)) {
		calais_reader_discard(r);
		return SCARD_E_NO_MEMORY;
	}
	r->n_features = d->n_features;
	r->ifd_version = d->ifd_version;
	r->channel_id = d->channel_id;
	r->max_input = d->max_input ? d->max_input : 261;
	r->slot = d->slot;
	r->flags = d->flags;
	r->protocols = d->protocols ? d->protocols : (SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1);
	r->card = CALAIS__CARD_ABSENT;
	*out = r;
	return SCARD_S_SUCCESS;
}

static void reader_free(struct calais_reader *r)
{
	calais__mutex_destroy(&r->io_lock);
	calais__mutex_destroy(&r->cancel_lock);
	calais__cond_destroy(&r->lock_cond);
	free(r->base);
	free(r->name);
	free(r->vendor);
	free(r->features);
	free(r);
}

void calais_reader_discard(calais_reader *r)
{
	if (r && !r->published)
		reader_free(r);
}

void calais__reader_unref(struct calais_reader *r)
{
	if (--r->refs == 0)
		reader_free(r);
}

/* FNV-1a of a reader name: its mgr.reader_hash bucket. */
static unsigned name_bucket(const char *name)
{
	uint32_t h = 2166136261u;
	for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		h = (h ^ *p) * 16777619u;
	return h & (CALAIS__HASH_SIZE - 1);
}

struct calais_reader *calais__reader_find(const char *name)
{
	for (struct calais_reader *r = M->reader_hash[name_bucket(name)]; r; r = r->name_next)
		if (strcmp(r->name, name) == 0)
			return r;
	return NULL;
}

/* Takes a published reader out of mgr.reader_hash. mgr.lock held. */
static void name_unhash(struct calais_reader *r)
{
	for (struct calais_reader **pp = &M->reader_hash[name_bucket(r->name)]; *pp;
	     pp = &(*pp)->name_next)
		if (*pp == r) {
			*pp = r->name_next;
			break;
		}
	r->name_next = NULL;
}

/* pcsc-lite's scheme: XX is the first index free among readers with the same base name
 * for this slot number, so every slot of one device shares its XX. XX has two hex
 * digits, so a base name and slot number have 256 readers at most: -1 when all are
 * taken (pcsc-lite never gets there, with 16 readers in all). */
static int pick_index(const struct calais_reader *nr)
{
	for (unsigned idx = 0; idx <= 0xFFu; idx++) {
		bool taken = false;
		for (struct calais_reader *r = M->readers; r && !taken; r = r->next)
			taken = r->index == idx && r->slot == nr->slot && strcmp(r->base, nr->base) == 0;
		/* A name kept from another manager may already be this one. */
		char name[MAX_READERNAME * 2 + 8];
		snprintf(name, sizeof(name), "%s %02X %02X", nr->base, idx & 0xFFu, nr->slot & 0xFFu);
		if (!taken && !calais__reader_find(name))
			return (int)idx;
	}
	return -1;
}

static void pnp_event(void)
{
	/* The reader-event counter skips 0, which means "no counter" to callers. */
	if (++M->pnp_counter == 0)
		M->pnp_counter = 1;
	calais__reader_state_changed(NULL);
}

LONG calais_reader_publish(calais_reader *r, bool card_present)
{
	if (!r || r->published)
		return SCARD_E_INVALID_PARAMETER;

	calais__mutex_lock(&M->lock);
	if (!M->running || M->stopping) {
		calais__mutex_unlock(&M->lock);
		reader_free(r);
		return SCARD_E_NO_SERVICE;
	}
	if ((r->flags & CALAIS_READER_KEEP_NAME) && !calais__reader_find(r->base)) {
		/* Another manager's name, kept (the passthrough backend). */
		r->name = dupstr(r->base);
	} else {
		if (r->flags & CALAIS_READER_KEEP_NAME)
			calais__warn("reader name \"%s\" taken; numbered anew", r->base);
		int idx = pick_index(r);
		if (idx < 0) {
			calais__err("256 readers named \"%s\" already; one more is not added", r->base);
			calais__mutex_unlock(&M->lock);
			reader_free(r);
			return SCARD_E_DUPLICATE_READER;
		}
		r->index = (unsigned)idx;
		size_t len = strlen(r->base) + 7;
		r->name = malloc(len);
		if (r->name)
			snprintf(r->name, len, "%s %02X %02X", r->base, r->index & 0xFFu,
			         r->slot & 0xFFu);
	}
	if (!r->name) {
		calais__mutex_unlock(&M->lock);
		reader_free(r);
		return SCARD_E_NO_MEMORY;
	}
	r->published = true;
	r->refs = 1; /* the registry's */
	r->sharing = 0;
	/* Appended, so SCardListReaders() lists readers in arrival order. */
	struct calais_reader **pp = &M->readers;
	while (*pp)
		pp = &(*pp)->next;
	*pp = r;
	unsigned b = name_bucket(r->name);
	r->name_next = M->reader_hash[b];
	M->reader_hash[b] = r;
	M->n_readers++;
	if (r->flags & CALAIS_READER_POLL_PRESENCE) {
		r->next_poll_ms = calais__now_ms() + M->cfg.poll_interval_ms;
		calais__worker_kick();
	}
	if ((r->flags & CALAIS_READER_PROBE_PRESENCE) && r->bi->be->slot_status) {
		r->probe_pending = true;
		calais__worker_kick();
	}
	calais__info("reader added: \"%s\" (%s)", r->name, r->bi->be->name);
	pnp_event();
	calais__mutex_unlock(&M->lock);

	if (card_present)
		calais_reader_card_event(r, true);
	return SCARD_S_SUCCESS;
}

void calais__reader_state_changed(struct calais_reader *r)
{
	calais__cond_broadcast(&M->state_cond);
	if (r && !r->name)
		return; /* not published yet: nobody can be watching it */
	for (struct calais__sc_waiter *w = M->sc_waiters; w; w = w->next) {
		bool watching = !r;
		for (DWORD i = 0; i < w->n && !watching; i++)
			watching = !(w->states[i].dwCurrentState & SCARD_STATE_IGNORE) &&
			           strcmp(w->states[i].szReader, r->name) == 0;
		if (watching)
			calais__cond_signal(&w->cond);
	}
}

void calais__reader_flag_handles(struct calais_reader *r, struct calais_handle *except, int ev)
{
	for (struct calais_handle *h = r->handles; h; h = h->r_next)
		if (h != except && h->pending != CALAIS__EV_REMOVED)
			h->pending = ev;
}

void calais__reader_release_tx(struct calais_reader *r)
{
	if (r->tx_owner) {
		r->tx_owner = NULL;
		r->tx_depth = 0;
		calais__cond_broadcast(&r->lock_cond);
		if (r->held)
			calais__worker_kick(); /* the backend's hold ends (JOB_UNHOLD) */
	}
}

LONG (*calais__reader_hold_fn(const struct calais_reader *r))(calais_reader *, bool)
{
	return r->bi->be->abi_version >= 2 ? r->bi->be->hold : NULL;
}

LONG calais__reader_hold(struct calais_reader *r, bool io_locked)
{
	LONG (*hold)(calais_reader *, bool) = calais__reader_hold_fn(r);
	if (!hold || r->held)
		return SCARD_S_SUCCESS;
	r->refs++;
	if (!io_locked)
		calais__reader_io_begin(r);
	bool closed = r->closed;
	calais__mutex_unlock(&M->lock);
	LONG rv = closed ? SCARD_E_READER_UNAVAILABLE : hold(r, true);
	calais__mutex_lock(&M->lock);
	rv = calais__reader_io_rv(r, rv);
	if (rv == SCARD_S_SUCCESS)
		r->held = true;
	if (!io_locked)
		calais__reader_io_end(r);
	calais__reader_unref(r);
	return rv;
}

void calais__reader_schedule_power_down(struct calais_reader *r)
{
	if (r->n_handles == 0 && r->card == CALAIS__CARD_POWERED &&
	    M->cfg.power_down_delay_ms != UINT32_MAX) {
		r->power_down_at_ms = calais__now_ms() + M->cfg.power_down_delay_ms;
		calais__worker_kick();
	}
}

static void bump_card_counter(struct calais_reader *r)
{
	r->event_counter = (uint16_t)(r->event_counter + 1);
}

/* mgr.lock held. */
static void card_gone(struct calais_reader *r)
{
	bool shown = r->card != CALAIS__CARD_ABSENT && r->card != CALAIS__CARD_INSERTED;
	r->card_gen++;
	r->card = CALAIS__CARD_ABSENT;
	r->atr_len = 0;
	r->protocol = 0;
	r->power_up_pending = false;
	r->power_down_at_ms = 0;
	calais__reader_flag_handles(r, NULL, CALAIS__EV_REMOVED);
	for (struct calais_handle *h = r->handles; h; h = h->r_next)
		h->protocol = 0;
	calais__reader_release_tx(r);
	calais__reader_cancel_io(r, CALAIS__CANCEL_CARD); /* an exchange with it is moot */
	if (shown) {
		bump_card_counter(r);
		calais__info("card removed from \"%s\"", r->name);
		calais__reader_state_changed(r);
	}
	calais__cond_broadcast(&r->lock_cond);
}

void calais_reader_set_unavailable(calais_reader *r, LONG reason)
{
	if (!r)
		return;
	calais__mutex_lock(&M->lock);
	if (r->unavailable != reason) {
		r->unavailable = reason;
		if (r->published)
			calais__info("\"%s\" %s%s", r->name, reason ? "unavailable: " : "available again",
			             reason ? pcsc_stringify_error(reason) : "");
		calais__reader_state_changed(r);
	}
	calais__mutex_unlock(&M->lock);
}

void calais__reader_lost(struct calais_reader *r)
{
	calais__mutex_lock(&M->lock);
	bool keep = r->unavailable != SCARD_S_SUCCESS;
	calais__mutex_unlock(&M->lock);
	/* A reader its backend keeps listed (a declared serial port) stays, unavailable. */
	if (!keep)
		calais_reader_remove(r);
}

void calais_reader_card_event(calais_reader *r, bool present)
{
	if (!r)
		return;
	calais__mutex_lock(&M->lock);
	r->backend_present = present;
	if (!r->published || r->removed || M->stopping) {
		calais__mutex_unlock(&M->lock);
		return;
	}
	if (r->probe_pending) {
		/* The backend has told: a presence probe still to come would only ask the device
		 * again (and could meet a command meant for something else). One in progress
		 * finds its answer older than this event and sets it aside. */
		r->probe_pending = false;
		calais__cond_broadcast(&M->state_cond); /* start-up waits for the probes */
	}
	if (present && r->card == CALAIS__CARD_ABSENT) {
		r->card_gen++;
		r->card = CALAIS__CARD_INSERTED;
		r->power_up_pending = true;
		calais__dbg("card inserted in \"%s\", powering up", r->name);
		calais__worker_kick();
	} else if (!present && r->card != CALAIS__CARD_ABSENT) {
		card_gone(r);
	}
	calais__mutex_unlock(&M->lock);
}

void calais_reader_remove(calais_reader *r)
{
	if (!r)
		return;
	calais__mutex_lock(&M->lock);
	if (!r->published || r->removed) {
		calais__mutex_unlock(&M->lock);
		return;
	}
	r->removed = true;
	for (struct calais_reader **pp = &M->readers; *pp; pp = &(*pp)->next)
		if (*pp == r) {
			*pp = r->next;
			break;
		}
	r->next = NULL;
	name_unhash(r);
	M->n_readers--;
	if (r->card != CALAIS__CARD_ABSENT)
		bump_card_counter(r);
	r->card = CALAIS__CARD_ABSENT;
	r->atr_len = 0;
	r->power_up_pending = false;
	calais__reader_release_tx(r);
	calais__cond_broadcast(&r->lock_cond);
	calais__info("reader removed: \"%s\"", r->name);
	pnp_event();
	/* An exchange in progress ends now, not when the device gives up. close() needs the
	 * io_lock, which the caller may hold (a backend noticing the device is gone inside
	 * transmit), so a runner does it (shutdown closes it itself). */
	calais__reader_cancel_io(r, CALAIS__CANCEL_READER);
	r->close_queued = true;
	r->dead_next = M->dead_readers;
	M->dead_readers = r;
	if (!M->stopping)
		calais__worker_kick();
	calais__mutex_unlock(&M->lock);
}

void *calais_reader_priv(calais_reader *r)
{
	return r ? r->priv : NULL;
}

calais_backend_instance *calais_reader_backend(calais_reader *r)
{
	return r ? r->bi : NULL;
}

const char *calais_reader_name(calais_reader *r)
{
	return r ? r->name : NULL;
}

/* ---- power ----------------------------------------------------------------------- */

/* Powers the card up (or resets it when warm) and records the result. io_lock held,
 * mgr.lock not held. An insertion becomes visible to waiters here, with its ATR. */
static LONG power_up(struct calais_reader *r, bool warm)
{
	uint8_t atr[MAX_ATR_SIZE + 8];
	size_t atr_len = 0;

	calais__mutex_lock(&M->lock);
	uint32_t gen = r->card_gen;
	calais__mutex_unlock(&M->lock);
	LONG rv = r->bi->be->power_on(r, warm, atr, &atr_len);
	if (rv == SCARD_S_SUCCESS && (atr_len < 2 || atr_len > MAX_ATR_SIZE)) {
		calais__warn("\"%s\": backend returned a %zu-byte ATR; treated as mute card",
		             r->name, atr_len);
		rv = SCARD_W_UNRESPONSIVE_CARD;
	}

	calais__mutex_lock(&M->lock);
	/* A cancelled power-up (the card or reader gone, the shutdown) is not a mute card. */
	rv = calais__reader_io_rv(r, rv);
	if (rv == SCARD_E_NO_SERVICE) {
		calais__mutex_unlock(&M->lock);
		return rv;
	}
	if (r->card_gen != gen && !r->removed) {
		/* The card was pulled (and maybe another inserted) during the power-up: the
		 * answer is about a card that is gone. A new card gets a power-up of its own
		 * (its insertion must not be reported removed, nor shown mute). */
		if (r->card == CALAIS__CARD_INSERTED) {
			r->power_up_pending = true;
			calais__worker_kick();
		}
		calais__mutex_unlock(&M->lock);
		return SCARD_E_NO_SMARTCARD;
	}
	bool was_inserted = r->card == CALAIS__CARD_INSERTED;
	if (r->removed || r->card == CALAIS__CARD_ABSENT) {
		/* Removed while powering: the removal already told everyone. */
		calais__mutex_unlock(&M->lock);
		return r->removed ? SCARD_E_READER_UNAVAILABLE : SCARD_E_NO_SMARTCARD;
	}
	r->power_up_pending = false;
	switch (rv) {
	case SCARD_S_SUCCESS:
		r->card = CALAIS__CARD_POWERED;
		memcpy(r->atr, atr, atr_len);
		r->atr_len = atr_len;
		r->protocol = 0;
		break;
	case SCARD_E_NO_SMARTCARD:
	case SCARD_W_REMOVED_CARD:
		calais__mutex_unlock(&M->lock);
		calais_reader_card_event(r, false);
		return SCARD_E_NO_SMARTCARD;
	case SCARD_E_READER_UNAVAILABLE:
		calais__mutex_unlock(&M->lock);
		calais__reader_lost(r);
		return rv;
	default:
		calais__warn("\"%s\": card does not answer to reset: %s", r->name,
		             pcsc_stringify_error(rv));
		r->card = CALAIS__CARD_MUTE;
		r->atr_len = 0;
		r->protocol = 0;
		rv = SCARD_W_UNRESPONSIVE_CARD;
		break;
	}
	if (was_inserted) {
		bump_card_counter(r);
		calais__info("card inserted in \"%s\"%s", r->name,
		             rv == SCARD_S_SUCCESS ? "" : " (mute)");
		calais__reader_state_changed(r);
		calais__reader_schedule_power_down(r);
	}
	calais__mutex_unlock(&M->lock);
	return rv;
}

LONG calais__reader_power_up(struct calais_reader *r)
{
	return power_up(r, false);
}

/* Warm reset (or power cycle when unpower) of a powered card. io_lock held. */
LONG calais__reader_reset(struct calais_reader *r, bool unpower)
{
	if (unpower && r->bi->be->power_off)
		r->bi->be->power_off(r);
	return power_up(r, !unpower);
}

/* Powers the card down. io_lock held. */
LONG calais__reader_power_down(struct calais_reader *r)
{
	LONG rv = r->bi->be->power_off ? r->bi->be->power_off(r) : SCARD_S_SUCCESS;
	calais__mutex_lock(&M->lock);
	if (r->card == CALAIS__CARD_POWERED) {
		r->card = CALAIS__CARD_UNPOWERED;
		r->protocol = 0;
	}
	r->power_down_at_ms = 0;
	calais__mutex_unlock(&M->lock);
	return rv;
}

/* ---- I/O sections ------------------------------------------------------------------ */

void calais__reader_io_begin(struct calais_reader *r)
{
	calais__mutex_unlock(&M->lock);
	calais__mutex_lock(&r->io_lock);
	/* cancel_lock: a cancel still being sent for the previous section finishes first. */
	calais__mutex_lock(&r->cancel_lock);
	calais__mutex_lock(&M->lock);
	calais__mutex_unlock(&r->cancel_lock);
	r->io_busy = true;
	r->io_seq++;
	r->io_owner = calais__tid();
	r->cancel_reason = CALAIS__CANCEL_NONE;
	r->cancel_sent_ms = 0;
	uint32_t limit = M->cfg.exchange_timeout_ms;
	r->io_deadline_ms = limit ? calais__now_ms() + limit : 0;
	/* The scheduler watches the limit: woken only when it sleeps past this one. */
	if (r->io_deadline_ms && r->io_deadline_ms < M->sched_next_ms)
		calais__worker_kick();
}

void calais__reader_io_end(struct calais_reader *r)
{
	r->io_busy = false;
	r->io_deadline_ms = 0;
	r->cancel_reason = CALAIS__CANCEL_NONE;
	/* A hold that outlived its transaction or exclusive handle ends (JOB_UNHOLD). */
	if (r->held && !r->tx_owner && r->sharing >= 0)
		calais__worker_kick();
	calais__mutex_unlock(&r->io_lock);
}

LONG calais__reader_io_rv(const struct calais_reader *r, LONG rv)
{
	/* Only a cancel's own code is replaced: a backend that knows better (the card's
	 * answer was malformed, the device is gone) keeps its word. */
	if (rv != SCARD_E_CANCELLED)
		return rv;
	switch (r->cancel_reason) {
	case CALAIS__CANCEL_TIMEOUT:
		return SCARD_E_TIMEOUT;
	case CALAIS__CANCEL_CARD:
		return SCARD_W_REMOVED_CARD;
	case CALAIS__CANCEL_READER:
		return SCARD_E_READER_UNAVAILABLE;
	case CALAIS__CANCEL_SHUTDOWN:
		return SCARD_E_NO_SERVICE;
	default:
		return rv;
	}
}

void calais__reader_cancel_io(struct calais_reader *r, int reason)
{
	/* A backend reporting the event from inside the section is on its way out already:
	 * its call is not cancelled (its next one would be, by a flag left set). */
	if (!r->io_busy || r->cancel_reason >= reason || r->io_owner == calais__tid() ||
	    r->closing)
		return;
	r->cancel_reason = reason;
	r->cancel_sent_ms = 0;
	if (!M->stopping)
		calais__worker_kick();
}

static void close_reader(struct calais_reader *r)
{
	calais__mutex_lock(&r->io_lock);
	if (!r->closed) {
		if (r->bi->be->close)
			r->bi->be->close(r);
		r->closed = true;
	}
	calais__mutex_unlock(&r->io_lock);
}

/* At shutdown: every reader (published or waiting for close) is closed and freed. No
 * call is in progress and the worker has stopped. */
void calais__reader_close_all(void)
{
	calais__mutex_lock(&M->lock);
	while (M->readers || M->dead_readers) {
		struct calais_reader *r;
		if (M->readers) {
			r = M->readers;
			M->readers = r->next;
			name_unhash(r);
			r->removed = true;
		} else {
			r = M->dead_readers;
			M->dead_readers = r->dead_next;
		}
		calais__mutex_unlock(&M->lock);
		close_reader(r);
		calais__mutex_lock(&M->lock);
		/* Handles still pointing at r are freed with their contexts right after;
		 * detach them so the reader can go now. */
		for (struct calais_handle *h = r->handles; h; h = h->r_next)
			h->reader = NULL;
		reader_free(r);
	}
	M->n_readers = 0;
	calais__mutex_unlock(&M->lock);
}
