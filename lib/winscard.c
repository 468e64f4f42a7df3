/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The PC/SC API: contexts, card handles, sharing, dispositions, transactions, status
 * and status-change waits, with pcsc-lite's semantics, on top of the reader registry. */
#include "calais-internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define M (&calais__mgr)

/* pcsc-lite still accepts the pre-1.0 "any protocol" value in preferred protocols and
 * send PCIs. */
#define PROTOCOL_ANY_OLD 0x1000u
#define PNP_READER_NAME "\\\\?PnP?\\Notification"

/* ---- entering and leaving the manager ---------------------------------------------- */

/* Every call runs between enter() and leave() with mgr.lock held (dropped only around
 * I/O and waits), so shutdown can wait for calls in progress to drain. */
static LONG enter(void)
{
	calais__mutex_lock(&M->lock);
	if (!M->running || M->stopping) {
		calais__mutex_unlock(&M->lock);
		return SCARD_E_INVALID_HANDLE;
	}
	M->active_calls++;
	return SCARD_S_SUCCESS;
}

static LONG leave(LONG rv)
{
	if (--M->active_calls == 0 && M->stopping)
		calais__cond_broadcast(&M->drain_cond);
	calais__mutex_unlock(&M->lock);
	return rv;
}

/* ---- handle tables ----------------------------------------------------------------- */

static unsigned bucket(uint64_t id)
{
	return (unsigned)((id * 0x9E3779B1u) >> 7) % CALAIS__HASH_SIZE;
}

static struct calais_context *ctx_lookup(SCARDCONTEXT id)
{
	/* Values are 32-bit (as pcsc-lite's); anything wider is forged. Taken unsigned: LONG
	 * is 32 bits on Windows, where half the values are negative. */
	if (id == 0 || (uint64_t)(ULONG)id >> 32)
		return NULL;
	for (struct calais_context *c = M->ctx_hash[bucket((uint64_t)id)]; c; c = c->hash_next)
		if (c->id == id && !c->dead)
			return c;
	return NULL;
}

static struct calais_handle *handle_lookup(SCARDHANDLE id)
{
	if (id == 0 || (uint64_t)(ULONG)id >> 32)
		return NULL;
	for (struct calais_handle *h = M->handle_hash[bucket((uint64_t)id)]; h; h = h->hash_next)
		if (h->id == id && !h->dead)
			return h;
	return NULL;
}

static void ctx_unref(struct calais_context *c)
{
	if (--c->refs == 0)
		free(c);
}

static void handle_unref(struct calais_handle *h)
{
	if (--h->refs == 0) {
		ctx_unref(h->ctx);
		free(h);
	}
}

/* Looks a handle up and holds it (and its context) for the call. */
static struct calais_handle *handle_get(SCARDHANDLE id)
{
	struct calais_handle *h = handle_lookup(id);
	if (h)
		h->refs++;
	return h;
}

static void hash_remove_ctx(struct calais_context *c)
{
	for (struct calais_context **pp = &M->ctx_hash[bucket((uint64_t)c->id)]; *pp; pp = &(*pp)->hash_next)
		if (*pp == c) {
			*pp = c->hash_next;
			return;
		}
}

static void hash_remove_handle(struct calais_handle *h)
{
	for (struct calais_handle **pp = &M->handle_hash[bucket((uint64_t)h->id)]; *pp; pp = &(*pp)->hash_next)
		if (*pp == h) {
			*pp = h->hash_next;
			return;
		}
}

/* ---- I/O sections -------------------------------------------------------------------- */

/* Takes the reader's io_lock in the right order. mgr.lock held on entry and exit. */
static void io_begin(struct calais_reader *r)
{
	r->refs++;
	calais__reader_io_begin(r);
}

static void io_end(struct calais_reader *r)
{
	calais__reader_io_end(r);
	calais__reader_unref(r);
}

static LONG pending_event(const struct calais_handle *h)
{
	switch (h->pending) {
	case CALAIS__EV_RESET:
		return SCARD_W_RESET_CARD;
	case CALAIS__EV_REMOVED:
		return SCARD_W_REMOVED_CARD;
	default:
		return SCARD_S_SUCCESS;
	}
}

/*
 * Waits until no other handle holds a transaction on h's reader, woken by the release
 * itself. With check_events, a pending reset or removal is reported first (it is
 * reported until SCardReconnect). mgr.lock held.
 */
static LONG wait_turn(struct calais_handle *h, bool check_events)
{
	uint32_t gen = h->ctx->cancel_gen;
	for (;;) {
		struct calais_reader *r = h->reader;
		if (M->stopping)
			return SCARD_E_CANCELLED;
		if (h->dead)
			return SCARD_E_INVALID_HANDLE;
		if (!r || r->removed)
			return SCARD_E_READER_UNAVAILABLE;
		if (check_events && h->pending)
			return pending_event(h);
		if (!r->tx_owner || r->tx_owner == h)
			return SCARD_S_SUCCESS;
		if (h->ctx->cancel_gen != gen)
			return SCARD_E_CANCELLED;
		r->refs++;
		calais__cond_wait(&r->lock_cond, &M->lock);
		calais__reader_unref(r);
	}
}

/* wait_turn() plus the reader's io_lock; on success both locks are held and the
 * conditions still hold. */
static LONG acquire_io(struct calais_handle *h, bool check_events)
{
	for (;;) {
		LONG rv = wait_turn(h, check_events);
		if (rv != SCARD_S_SUCCESS)
			return rv;
		struct calais_reader *r = h->reader;
		io_begin(r);
		/* Another handle may have begun a transaction while we waited for I/O. */
		if (h->reader == r && !r->removed && !h->dead && (!r->tx_owner || r->tx_owner == h) &&
		    !(check_events && h->pending) && !M->stopping)
			return SCARD_S_SUCCESS;
		io_end(r);
	}
}

static void touch_tx(struct calais_handle *h)
{
	if (h->reader && h->reader->tx_owner == h)
		h->reader->tx_last_use_ms = calais__now_ms();
}

/* ---- buffers --------------------------------------------------------------------- */

/*
 * The PC/SC output-buffer rules, in one place: a NULL length pointer skips the value; a
 * length of SCARD_AUTOALLOCATE means buf is a pointer to a pointer that receives a
 * malloc'd copy (freed with SCardFreeMemory); a NULL buffer is a size query; a small
 * buffer gives SCARD_E_INSUFFICIENT_BUFFER. The needed size is always written back.
 */
static LONG put_out(void *buf, DWORD *len, const void *data, size_t n, bool null_is_error)
{
	if (!len)
		return SCARD_S_SUCCESS;
	if (*len == SCARD_AUTOALLOCATE) {
		if (!buf)
			return SCARD_E_INVALID_PARAMETER;
		void *p = malloc(n ? n : 1);
		if (!p)
			return SCARD_E_NO_MEMORY;
		memcpy(p, data, n);
		*(void **)buf = p;
		*len = (DWORD)n;
		return SCARD_S_SUCCESS;
	}
	if (!buf) {
		*len = (DWORD)n;
		return null_is_error ? SCARD_E_INVALID_PARAMETER : SCARD_S_SUCCESS;
	}
	if (*len < n) {
		*len = (DWORD)n;
		return SCARD_E_INSUFFICIENT_BUFFER;
	}
	memcpy(buf, data, n);
	*len = (DWORD)n;
	return SCARD_S_SUCCESS;
}

/* ---- contexts ---------------------------------------------------------------------- */

LONG SCardEstablishContext(DWORD dwScope, LPCVOID pvReserved1, LPCVOID pvReserved2,
                           LPSCARDCONTEXT phContext)
{
	(void)pvReserved1;
	(void)pvReserved2;
	if (!phContext)
		return SCARD_E_INVALID_PARAMETER;
	*phContext = 0;
	if (dwScope != SCARD_SCOPE_USER && dwScope != SCARD_SCOPE_TERMINAL &&
	    dwScope != SCARD_SCOPE_SYSTEM && dwScope != SCARD_SCOPE_GLOBAL)
		return SCARD_E_INVALID_VALUE;

	/* Waits for a start-up in progress (or makes one), so the first listing of every
	 * thread shows what start-up found; fails during a shutdown. */
	LONG rv = calais__ensure_started();
	if (rv != SCARD_S_SUCCESS)
		return SCARD_E_NO_SERVICE;
	if (enter() != SCARD_S_SUCCESS)
		return SCARD_E_NO_SERVICE;
	struct calais_context *c = calloc(1, sizeof(*c));
	if (!c)
		return leave(SCARD_E_NO_MEMORY);
	do
		c->id = (SCARDCONTEXT)calais__random32();
	while (c->id == 0 || ctx_lookup(c->id));
	c->refs = 1;
	unsigned b = bucket((uint64_t)c->id);
	c->hash_next = M->ctx_hash[b];
	M->ctx_hash[b] = c;
	*phContext = c->id;
	return leave(SCARD_S_SUCCESS);
}

LONG SCardIsValidContext(SCARDCONTEXT hContext)
{
	if (enter() != SCARD_S_SUCCESS)
		return SCARD_E_INVALID_HANDLE;
	return leave(ctx_lookup(hContext) ? SCARD_S_SUCCESS : SCARD_E_INVALID_HANDLE);
}

static void disconnect(struct calais_handle *h, DWORD disp);

LONG SCardReleaseContext(SCARDCONTEXT hContext)
{
	if (enter() != SCARD_S_SUCCESS)
		return SCARD_E_INVALID_HANDLE;
	struct calais_context *c = ctx_lookup(hContext);
	if (!c)
		return leave(SCARD_E_INVALID_HANDLE);
	c->dead = true;
	hash_remove_ctx(c);
	c->cancel_gen++; /* wakes this context's waiters, which then see it dead */
	calais__reader_state_changed(NULL);
	while (c->handles) {
		struct calais_handle *h = c->handles;
		/* A transaction left open by the context is ended with a reset (pcsc-lite),
		 * so the next user does not inherit a half-done card session. */
		bool owner = h->reader && h->reader->tx_owner == h;
		h->refs++;
		disconnect(h, owner ? SCARD_RESET_CARD : SCARD_LEAVE_CARD);
		handle_unref(h);
	}
	ctx_unref(c);
	return leave(SCARD_S_SUCCESS);
}

LONG SCardCancel(SCARDCONTEXT hContext)
{
	if (enter() != SCARD_S_SUCCESS)
		return SCARD_E_INVALID_HANDLE;
	struct calais_context *c = ctx_lookup(hContext);
	if (!c)
		return leave(SCARD_E_INVALID_HANDLE);
	/* Waiters compare the generation they started with, so a cancel with nothing
	 * pending leaves nothing behind for the next call. */
	c->cancel_gen++;
	calais__reader_state_changed(NULL);
	for (struct calais_reader *r = M->readers; r; r = r->next)
		if (r->tx_owner)
			calais__cond_broadcast(&r->lock_cond);
	return leave(SCARD_S_SUCCESS);
}

LONG SCardFreeMemory(SCARDCONTEXT hContext, LPCVOID pvMem)
{
	if (enter() != SCARD_S_SUCCESS)
		return SCARD_E_INVALID_HANDLE;
	if (!ctx_lookup(hContext))
		return leave(SCARD_E_INVALID_HANDLE);
	free((void *)(uintptr_t)pvMem);
	return leave(SCARD_S_SUCCESS);
}

/* ---- listing ----------------------------------------------------------------------- */

static const char default_group[] = "SCard$DefaultReaders\0";

/* The groups every reader belongs to (Windows' predefined ones); other names match no
 * reader. pcsc-lite ignores the filter; we honour it the way Windows does. */
static bool groups_match(LPCSTR groups)
{
	static const char *const known[] = { "SCard$DefaultReaders", "SCard$AllReaders",
		                             "SCard$LocalReaders", "SCard$SystemReaders" };
	if (!groups || !*groups)
		return true;
	for (const char *g = groups; *g; g += strlen(g) + 1)
		for (size_t i = 0; i < CALAIS__ARRAY_SIZE(known); i++)
			if (strcasecmp(g, known[i]) == 0)
				return true;
	return false;
}

LONG SCardListReaders(SCARDCONTEXT hContext, LPCSTR mszGroups, LPSTR mszReaders,
                      LPDWORD pcchReaders)
{
	if (!pcchReaders)
		return SCARD_E_INVALID_PARAMETER;
	if (enter() != SCARD_S_SUCCESS)
		return SCARD_E_INVALID_HANDLE;
	if (!ctx_lookup(hContext))
		return leave(SCARD_E_INVALID_HANDLE);
	if (*pcchReaders == SCARD_AUTOALLOCATE && !mszReaders)
		return leave(SCARD_E_INVALID_PARAMETER);

	size_t n = 1;
	bool any = M->readers && groups_match(mszGroups);
	if (any)
		for (struct calais_reader *r = M->readers; r; r = r->next)
			n += strlen(r->name) + 1;
	if (!any)
		return leave(SCARD_E_NO_READERS_AVAILABLE);

	char stackbuf[1024];
	char *list = n <= sizeof(stackbuf) ? stackbuf : malloc(n);
	if (!list)
		return leave(SCARD_E_NO_MEMORY);
	char *p = list;
	for (struct calais_reader *r = M->readers; r; r = r->next) {
		size_t l = strlen(r->name) + 1;
		memcpy(p, r->name, l);
		p += l;
	}
	*p = '\0';
	LONG rv = put_out(mszReaders, pcchReaders, list, n, false);
	if (list != stackbuf)
		free(list);
	return leave(rv);
}

LONG SCardListReaderGroups(SCARDCONTEXT hContext, LPSTR mszGroups, LPDWORD pcchGroups)
{
	if (!pcchGroups)
		return SCARD_E_INVALID_PARAMETER;
	if (enter() != SCARD_S_SUCCESS)
		return SCARD_E_INVALID_HANDLE;
	if (!ctx_lookup(hContext))
		return leave(SCARD_E_INVALID_HANDLE);
	if (*pcchGroups == SCARD_AUTOALLOCATE && !mszGroups)
		return leave(SCARD_E_INVALID_PARAMETER);
	return leave(put_out(mszGroups, pcchGroups, default_group, sizeof(default_group), false));
}

/* ---- connecting ----------------------------------------------------------------------- */

static bool valid_share(DWORD s)
{
	return s == SCARD_SHARE_EXCLUSIVE || s == SCARD_SHARE_SHARED || s == SCARD_SHARE_DIRECT;
}

static bool valid_protocols(DWORD p)
{
	return (p & (SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1 | SCARD_PROTOCOL_RAW | PROTOCOL_ANY_OLD)) != 0;
}

/*
 * Makes sure the card is powered and its protocol chosen, as the first non-DIRECT
 * connection after a power-up does in pcsc-lite: the ATR's specific mode, else its
 * first offered protocol when asked for, else another offered one through PPS.
 * mgr.lock and the io_lock held; mgr.lock is dropped around backend calls.
 */
static LONG prepare_card(struct calais_reader *r, DWORD preferred, DWORD *active)
{
	if (r->card == CALAIS__CARD_ABSENT)
		return SCARD_E_NO_SMARTCARD;
	if (r->card != CALAIS__CARD_POWERED) {
		/* On-demand power: inserted but not yet powered, powered down while idle, or
		 * mute (tried again: the card may have been inserted slowly). */
		calais__mutex_unlock(&M->lock);
		LONG rv = calais__reader_power_up(r);
		calais__mutex_lock(&M->lock);
		if (rv != SCARD_S_SUCCESS)
			return rv == SCARD_E_READER_UNAVAILABLE || rv == SCARD_E_NO_SMARTCARD
			               ? rv
			               : SCARD_W_UNRESPONSIVE_CARD;
		if (r->card != CALAIS__CARD_POWERED)
			return SCARD_E_NO_SMARTCARD;
	}
	if (preferred & PROTOCOL_ANY_OLD)
		preferred |= SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1;

	if (r->protocol) {
		if (!(preferred & r->protocol))
			return SCARD_E_PROTO_MISMATCH;
		*active = r->protocol;
		return SCARD_S_SUCCESS;
	}

	struct calais__atr_info ai;
	if (calais__atr_protocols(r->atr, r->atr_len, &ai) != SCARD_S_SUCCESS) {
		/* An ATR we cannot walk still gets its card a chance at T=0, the default. */
		ai.protocols = SCARD_PROTOCOL_T0;
		ai.default_proto = SCARD_PROTOCOL_T0;
		ai.specific = false;
	}
	uint32_t offered = ai.protocols & r->protocols;
	uint32_t proto = 0;
	if (ai.specific) {
		if (preferred & ai.specific_proto & r->protocols)
			proto = ai.specific_proto;
	} else if (preferred & ai.default_proto & r->protocols) {
		proto = ai.default_proto;
	} else if (preferred & offered & SCARD_PROTOCOL_T1) {
		proto = SCARD_PROTOCOL_T1;
	} else if (preferred & offered & SCARD_PROTOCOL_T0) {
		proto = SCARD_PROTOCOL_T0;
	}
	if (!proto && (preferred & SCARD_PROTOCOL_RAW) && (r->protocols & SCARD_PROTOCOL_RAW))
		proto = SCARD_PROTOCOL_RAW;
	if (!proto) {
		calais__info("\"%s\": card offers protocols 0x%x, caller wants 0x%lx", r->name,
		             ai.protocols, (unsigned long)preferred);
		return SCARD_E_PROTO_MISMATCH;
	}
	if (proto != SCARD_PROTOCOL_RAW && r->bi->be->set_protocol) {
		calais__mutex_unlock(&M->lock);
		LONG rv = r->bi->be->set_protocol(r, proto);
		calais__mutex_lock(&M->lock);
		if (rv != SCARD_S_SUCCESS) {
			calais__warn("\"%s\": protocol T=%d selection failed: %s", r->name,
			             proto == SCARD_PROTOCOL_T1, pcsc_stringify_error(rv));
			return rv == SCARD_E_PROTO_MISMATCH ? rv : SCARD_W_UNRESPONSIVE_CARD;
		}
	}
	if (r->card != CALAIS__CARD_POWERED)
		return SCARD_W_REMOVED_CARD;
	r->protocol = proto;
	*active = proto;
	return SCARD_S_SUCCESS;
}

static void sharing_add(struct calais_reader *r, DWORD share)
{
	if (share == SCARD_SHARE_EXCLUSIVE)
		r->sharing = -1;
	else
		r->sharing++;
}

static void sharing_remove(struct calais_reader *r, DWORD share)
{
	if (share == SCARD_SHARE_EXCLUSIVE || r->sharing < 0)
		r->sharing = 0;
	else if (r->sharing > 0)
		r->sharing--;
	if (r->held)
		calais__worker_kick(); /* the backend's hold may end (JOB_UNHOLD) */
}

LONG SCardConnect(SCARDCONTEXT hContext, LPCSTR szReader, DWORD dwShareMode,
                  DWORD dwPreferredProtocols, LPSCARDHANDLE phCard, LPDWORD pdwActiveProtocol)
{
	if (!phCard || !pdwActiveProtocol)
		return SCARD_E_INVALID_PARAMETER;
	*phCard = 0;
	if (enter() != SCARD_S_SUCCESS)
		return SCARD_E_INVALID_HANDLE;
	struct calais_context *c = ctx_lookup(hContext);
	if (!c)
		return leave(SCARD_E_INVALID_HANDLE);
	if (!szReader)
		return leave(SCARD_E_UNKNOWN_READER);
	if (!valid_share(dwShareMode))
		return leave(SCARD_E_INVALID_VALUE);
	if (dwShareMode != SCARD_SHARE_DIRECT && !valid_protocols(dwPreferredProtocols))
		return leave(SCARD_E_PROTO_MISMATCH);
	struct calais_reader *r = calais__reader_find(szReader);
	if (!r)
		return leave(SCARD_E_UNKNOWN_READER);

	c->refs++;
	io_begin(r);
	LONG rv = SCARD_S_SUCCESS;
	DWORD active = SCARD_PROTOCOL_UNDEFINED;
	if (c->dead)
		rv = SCARD_E_INVALID_HANDLE;
	else if (r->removed)
		rv = SCARD_E_READER_UNAVAILABLE;
	else if (M->stopping)
		rv = SCARD_E_NO_SERVICE;
	else if (r->sharing < 0 || (dwShareMode == SCARD_SHARE_EXCLUSIVE && r->sharing > 0))
		rv = SCARD_E_SHARING_VIOLATION;
	else if (dwShareMode != SCARD_SHARE_DIRECT && r->unavailable)
		rv = r->unavailable;
	else if (dwShareMode != SCARD_SHARE_DIRECT)
		rv = prepare_card(r, dwPreferredProtocols, &active);
	else
		active = r->protocol;
	/* prepare_card() dropped mgr.lock: the sharing state may have moved. */
	if (rv == SCARD_S_SUCCESS &&
	    (r->removed || c->dead || r->sharing < 0 ||
	     (dwShareMode == SCARD_SHARE_EXCLUSIVE && r->sharing > 0)))
		rv = r->removed ? SCARD_E_READER_UNAVAILABLE
		     : c->dead  ? SCARD_E_INVALID_HANDLE
		                : SCARD_E_SHARING_VIOLATION;
	if (rv == SCARD_S_SUCCESS && dwShareMode == SCARD_SHARE_EXCLUSIVE) {
		/* Other processes sharing the reader are held off too (passthrough). */
		rv = calais__reader_hold(r, true);
		if (rv == SCARD_S_SUCCESS && (r->removed || c->dead || r->sharing != 0))
			rv = r->removed ? SCARD_E_READER_UNAVAILABLE
			     : c->dead  ? SCARD_E_INVALID_HANDLE
			                : SCARD_E_SHARING_VIOLATION;
		if (rv != SCARD_S_SUCCESS && r->held)
			calais__worker_kick(); /* no exclusive handle after all: JOB_UNHOLD */
	}

	struct calais_handle *h = NULL;
	if (rv == SCARD_S_SUCCESS) {
		h = calloc(1, sizeof(*h));
		if (!h)
			rv = SCARD_E_NO_MEMORY;
	}
	if (rv == SCARD_S_SUCCESS) {
		do
			h->id = (SCARDHANDLE)calais__random32();
		while (h->id == 0 || handle_lookup(h->id));
		h->ctx = c;
		c->refs++;
		h->refs = 1;
		h->reader = r;
		r->refs++;
		h->share = dwShareMode;
		h->protocol = active;
		unsigned b = bucket((uint64_t)h->id);
		h->hash_next = M->handle_hash[b];
		M->handle_hash[b] = h;
		h->ctx_next = c->handles;
		c->handles = h;
		h->r_next = r->handles;
		if (r->handles)
			r->handles->r_prev = h;
		r->handles = h;
		r->n_handles++;
		sharing_add(r, dwShareMode);
		r->power_down_at_ms = 0;
		calais__reader_state_changed(r); /* INUSE / EXCLUSIVE */
		*phCard = h->id;
		*pdwActiveProtocol = active;
		calais__dbg("connected to \"%s\" (share %lu, protocol %lu)", r->name,
		            (unsigned long)dwShareMode, (unsigned long)active);
	} else if (r->n_handles == 0) {
		calais__reader_schedule_power_down(r);
	}
	io_end(r);
	ctx_unref(c);
	return leave(rv);
}

/* Applies a disposition that touches the card. mgr.lock and io_lock held. */
static LONG apply_disposition(struct calais_reader *r, struct calais_handle *self, DWORD disp,
                              bool flag_self)
{
	if (disp == SCARD_LEAVE_CARD || r->removed)
		return SCARD_S_SUCCESS;
	if (r->card == CALAIS__CARD_ABSENT || r->card == CALAIS__CARD_INSERTED)
		return SCARD_S_SUCCESS;
	calais__reader_flag_handles(r, flag_self ? NULL : self, CALAIS__EV_RESET);
	calais__mutex_unlock(&M->lock);
	LONG rv;
	if (disp == SCARD_RESET_CARD)
		rv = calais__reader_reset(r, false);
	else /* UNPOWER; EJECT too: no backend here can eject, so the card is powered off */
		rv = calais__reader_power_down(r);
	calais__mutex_lock(&M->lock);
	return rv;
}

/* Disconnects h and frees it once no call holds it. mgr.lock held; may be dropped. */
static void disconnect(struct calais_handle *h, DWORD disp)
{
	struct calais_reader *r = h->reader;
	h->dead = true;
	hash_remove_handle(h);
	for (struct calais_handle **pp = &h->ctx->handles; *pp; pp = &(*pp)->ctx_next)
		if (*pp == h) {
			*pp = h->ctx_next;
			break;
		}
	if (r) {
		if (h->r_prev)
			h->r_prev->r_next = h->r_next;
		else
			r->handles = h->r_next;
		if (h->r_next)
			h->r_next->r_prev = h->r_prev;
		h->reader = NULL;
		r->n_handles--;
		sharing_remove(r, h->share);
		bool touch = disp != SCARD_LEAVE_CARD && !r->removed;
		/* pcsc-lite waits for another handle's transaction before resetting. */
		while (touch && r->tx_owner && r->tx_owner != h && !r->removed && !M->stopping)
			calais__cond_wait(&r->lock_cond, &M->lock);
		/* The others learn of the reset before our transaction (if any) is released,
		 * so none of them can begin one on a card about to be reset. */
		if (touch && (r->card == CALAIS__CARD_POWERED || r->card == CALAIS__CARD_UNPOWERED))
			calais__reader_flag_handles(r, NULL, CALAIS__EV_RESET);
		if (r->tx_owner == h)
			calais__reader_release_tx(r);
		if (touch && !r->removed) {
			io_begin(r);
			apply_disposition(r, NULL, disp, false);
			io_end(r);
		}
		calais__reader_schedule_power_down(r);
		calais__reader_state_changed(r);
		calais__cond_broadcast(&r->lock_cond);
		calais__reader_unref(r);
	}
	handle_unref(h);
}

LONG SCardDisconnect(SCARDHANDLE hCard, DWORD dwDisposition)
{
	if (dwDisposition != SCARD_LEAVE_CARD && dwDisposition != SCARD_RESET_CARD &&
	    dwDisposition != SCARD_UNPOWER_CARD && dwDisposition != SCARD_EJECT_CARD)
		return SCARD_E_INVALID_VALUE;
	if (enter() != SCARD_S_SUCCESS)
		return SCARD_E_INVALID_HANDLE;
	struct calais_handle *h = handle_get(hCard);
	if (!h)
		return leave(SCARD_E_INVALID_HANDLE);
	disconnect(h, dwDisposition);
	handle_unref(h);
	return leave(SCARD_S_SUCCESS);
}

LONG SCardReconnect(SCARDHANDLE hCard, DWORD dwShareMode, DWORD dwPreferredProtocols,
                    DWORD dwInitialization, LPDWORD pdwActiveProtocol)
{
	if (!pdwActiveProtocol)
		return SCARD_E_INVALID_PARAMETER;
	if (!valid_share(dwShareMode))
		return SCARD_E_INVALID_VALUE;
	if (dwInitialization != SCARD_LEAVE_CARD && dwInitialization != SCARD_RESET_CARD &&
	    dwInitialization != SCARD_UNPOWER_CARD)
		return SCARD_E_INVALID_VALUE;
	if (dwShareMode != SCARD_SHARE_DIRECT && !valid_protocols(dwPreferredProtocols))
		return SCARD_E_PROTO_MISMATCH;
	if (enter() != SCARD_S_SUCCESS)
		return SCARD_E_INVALID_HANDLE;
	struct calais_handle *h = handle_get(hCard);
	if (!h)
		return leave(SCARD_E_INVALID_HANDLE);

	LONG rv = acquire_io(h, false);
	if (rv != SCARD_S_SUCCESS) {
		handle_unref(h);
		return leave(rv);
	}
	struct calais_reader *r = h->reader;
	/* Sharing: becoming exclusive needs to be the only connection. */
	int others = r->sharing < 0 ? 0 : r->sharing - (h->share == SCARD_SHARE_EXCLUSIVE ? 0 : 1);
	if (dwShareMode == SCARD_SHARE_EXCLUSIVE && others > 0 && h->share != SCARD_SHARE_EXCLUSIVE)
		rv = SCARD_E_SHARING_VIOLATION;
	if (rv == SCARD_S_SUCCESS && dwShareMode != SCARD_SHARE_DIRECT &&
	    r->card == CALAIS__CARD_ABSENT)
		rv = SCARD_E_NO_SMARTCARD;
	if (rv == SCARD_S_SUCCESS && dwInitialization != SCARD_LEAVE_CARD &&
	    (r->card == CALAIS__CARD_POWERED || r->card == CALAIS__CARD_UNPOWERED)) {
		/* Every other handle learns of the reset; this one asked for it. */
		rv = apply_disposition(r, h, dwInitialization, false);
		if (rv == SCARD_S_SUCCESS && dwInitialization == SCARD_UNPOWER_CARD) {
			calais__mutex_unlock(&M->lock);
			rv = calais__reader_power_up(r);
			calais__mutex_lock(&M->lock);
		}
		if (rv != SCARD_S_SUCCESS && rv != SCARD_E_NO_SMARTCARD &&
		    rv != SCARD_E_READER_UNAVAILABLE)
			rv = SCARD_W_UNRESPONSIVE_CARD;
	}
	DWORD active = r->protocol;
	if (rv == SCARD_S_SUCCESS && dwShareMode != SCARD_SHARE_DIRECT)
		rv = prepare_card(r, dwPreferredProtocols, &active);
	if (rv == SCARD_S_SUCCESS && (r->removed || h->dead))
		rv = r->removed ? SCARD_E_READER_UNAVAILABLE : SCARD_E_INVALID_HANDLE;
	if (rv == SCARD_S_SUCCESS && dwShareMode == SCARD_SHARE_EXCLUSIVE)
		rv = calais__reader_hold(r, true); /* io_begin() above */
	if (rv == SCARD_S_SUCCESS) {
		sharing_remove(r, h->share);
		sharing_add(r, dwShareMode);
		h->share = dwShareMode;
		h->pending = CALAIS__EV_NONE;
		h->protocol = active;
		*pdwActiveProtocol = active;
		touch_tx(h);
		calais__reader_state_changed(r);
	}
	io_end(r);
	handle_unref(h);
	return leave(rv);
}

/* ---- transactions --------------------------------------------------------------------- */

LONG SCardBeginTransaction(SCARDHANDLE hCard)
{
	if (enter() != SCARD_S_SUCCESS)
		return SCARD_E_INVALID_HANDLE;
	struct calais_handle *h = handle_get(hCard);
	if (!h)
		return leave(SCARD_E_INVALID_HANDLE);
	LONG rv = wait_turn(h, true);
	if (rv == SCARD_S_SUCCESS) {
		struct calais_reader *r = h->reader;
		if (r->tx_owner == h) {
			r->tx_depth++;
		} else {
			r->tx_owner = h;
			r->tx_depth = 1;
			/* Other processes sharing the reader are held off too (passthrough). */
			rv = calais__reader_hold(r, false);
			if (rv != SCARD_S_SUCCESS && r->tx_owner == h)
				calais__reader_release_tx(r);
		}
		touch_tx(h);
		if (M->cfg.transaction_timeout_ms)
			calais__worker_kick();
	}
	handle_unref(h);
	return leave(rv);
}

LONG SCardEndTransaction(SCARDHANDLE hCard, DWORD dwDisposition)
{
	if (dwDisposition != SCARD_LEAVE_CARD && dwDisposition != SCARD_RESET_CARD &&
	    dwDisposition != SCARD_UNPOWER_CARD && dwDisposition != SCARD_EJECT_CARD)
		return SCARD_E_INVALID_VALUE;
	if (enter() != SCARD_S_SUCCESS)
		return SCARD_E_INVALID_HANDLE;
	struct calais_handle *h = handle_get(hCard);
	if (!h)
		return leave(SCARD_E_INVALID_HANDLE);
	struct calais_reader *r = h->reader;
	LONG rv = SCARD_S_SUCCESS;
	if (!r || r->removed)
		rv = SCARD_E_READER_UNAVAILABLE;
	else if (h->pending)
		rv = pending_event(h);
	else if (r->tx_owner && r->tx_owner != h)
		rv = SCARD_E_SHARING_VIOLATION;
	else if (r->tx_owner != h)
		rv = SCARD_E_NOT_TRANSACTED;
	if (rv == SCARD_S_SUCCESS) {
		if (dwDisposition != SCARD_LEAVE_CARD) {
			io_begin(r);
			/* The caller is told of its own reset too, as in pcsc-lite. */
			apply_disposition(r, h, dwDisposition, true);
			io_end(r);
		}
		if (r->tx_owner == h && --r->tx_depth == 0)
			calais__reader_release_tx(r);
	}
	handle_unref(h);
	return leave(rv);
}

/* ---- status ----------------------------------------------------------------------------- */

static DWORD card_state_bits(const struct calais_reader *r)
{
	switch (r->card) {
	case CALAIS__CARD_POWERED:
		return SCARD_PRESENT | SCARD_POWERED | (r->protocol ? SCARD_SPECIFIC : SCARD_NEGOTIABLE);
	case CALAIS__CARD_UNPOWERED:
	case CALAIS__CARD_MUTE:
		return SCARD_PRESENT | SCARD_SWALLOWED;
	default:
		return SCARD_ABSENT;
	}
}

LONG SCardStatus(SCARDHANDLE hCard, LPSTR szReaderName, LPDWORD pcchReaderLen, LPDWORD pdwState,
                 LPDWORD pdwProtocol, LPBYTE pbAtr, LPDWORD pcbAtrLen)
{
	if (enter() != SCARD_S_SUCCESS)
		return SCARD_E_INVALID_HANDLE;
	struct calais_handle *h = handle_get(hCard);
	if (!h)
		return leave(SCARD_E_INVALID_HANDLE);
	LONG rv = wait_turn(h, true);
	if (rv == SCARD_S_SUCCESS) {
		struct calais_reader *r = h->reader;
		/* The ATR is copied first: the name and ATR outputs may fail independently,
		 * and the caller always learns both sizes. */
		uint8_t atr[MAX_ATR_SIZE];
		size_t atr_len = r->card == CALAIS__CARD_ABSENT ? 0 : r->atr_len;
		memcpy(atr, r->atr, atr_len);
		if (pdwState)
			*pdwState = card_state_bits(r) | ((DWORD)r->event_counter << 16);
		if (pdwProtocol)
			*pdwProtocol = h->protocol;
		LONG rv1 = put_out(szReaderName, pcchReaderLen, r->name, strlen(r->name) + 1, false);
		LONG rv2 = put_out(pbAtr, pcbAtrLen, atr, atr_len, false);
		rv = rv1 != SCARD_S_SUCCESS ? rv1 : rv2;
		touch_tx(h);
	}
	handle_unref(h);
	return leave(rv);
}

/* The state bits and counter of one reader for SCardGetStatusChange(). */
static DWORD reader_event_state(const struct calais_reader *r, SCARD_READERSTATE *rs)
{
	DWORD s;
	rs->cbAtr = 0;
	switch (r->card) {
	case CALAIS__CARD_POWERED:
	case CALAIS__CARD_UNPOWERED:
	case CALAIS__CARD_MUTE:
		s = SCARD_STATE_PRESENT;
		if (r->card == CALAIS__CARD_MUTE)
			s |= SCARD_STATE_MUTE;
		if (r->sharing < 0)
			s |= SCARD_STATE_EXCLUSIVE;
		else if (r->sharing > 0)
			s |= SCARD_STATE_INUSE;
		memcpy(rs->rgbAtr, r->atr, r->atr_len);
		rs->cbAtr = (DWORD)r->atr_len;
		break;
	default:
		s = SCARD_STATE_EMPTY;
		break;
	}
	if (r->unavailable)
		s |= SCARD_STATE_UNAVAILABLE;
	return s | ((DWORD)r->event_counter << 16);
}

#define STATE_MASK                                                                       \
	(SCARD_STATE_UNKNOWN | SCARD_STATE_UNAVAILABLE | SCARD_STATE_EMPTY |              \
	 SCARD_STATE_PRESENT | SCARD_STATE_EXCLUSIVE | SCARD_STATE_INUSE | SCARD_STATE_MUTE)

/* Fills every entry; returns true when one of them changed. mgr.lock held. */
static bool scan_states(SCARD_READERSTATE *rs, DWORD n, uint16_t pnp_start)
{
	bool changed = false;
	for (DWORD i = 0; i < n; i++) {
		SCARD_READERSTATE *e = &rs[i];
		DWORD cur = e->dwCurrentState;
		DWORD ev;
		if (cur & SCARD_STATE_IGNORE) {
			e->dwEventState = SCARD_STATE_IGNORE;
			continue;
		}
		if (strcasecmp(e->szReader, PNP_READER_NAME) == 0) {
			DWORD cnt = cur >> 16;
			ev = (DWORD)M->pnp_counter << 16;
			if (M->pnp_counter != pnp_start || (cnt && cnt != M->pnp_counter)) {
				ev |= SCARD_STATE_CHANGED;
				changed = true;
			}
			e->dwEventState = ev;
			continue;
		}
		struct calais_reader *r = calais__reader_find(e->szReader);
		if (!r) {
			/* Removed during the wait: reported, not ignored, so the caller can
			 * look for it again (pcsc-lite does the same). */
			ev = SCARD_STATE_UNKNOWN | SCARD_STATE_UNAVAILABLE;
			if (!(cur & SCARD_STATE_UNKNOWN)) {
				ev |= SCARD_STATE_CHANGED;
				changed = true;
			}
			e->dwEventState = ev;
			e->cbAtr = 0;
			continue;
		}
		ev = reader_event_state(r, e);
		DWORD cnt = cur >> 16;
		if (cur == SCARD_STATE_UNAWARE || (cur & STATE_MASK) != (ev & STATE_MASK) ||
		    (cnt && cnt != (ev >> 16))) {
			ev |= SCARD_STATE_CHANGED;
			changed = true;
		}
		e->dwEventState = ev;
	}
	return changed;
}

LONG SCardGetStatusChange(SCARDCONTEXT hContext, DWORD dwTimeout,
                          SCARD_READERSTATE *rgReaderStates, DWORD cReaders)
{
	if (!rgReaderStates && cReaders > 0)
		return SCARD_E_INVALID_PARAMETER;
	if (enter() != SCARD_S_SUCCESS)
		return SCARD_E_INVALID_HANDLE;
	struct calais_context *c = ctx_lookup(hContext);
	if (!c)
		return leave(SCARD_E_INVALID_HANDLE);
	if (cReaders == 0)
		return leave(SCARD_S_SUCCESS);

	bool all_ignored = true;
	for (DWORD i = 0; i < cReaders; i++) {
		const char *name = rgReaderStates[i].szReader;
		if (!name)
			return leave(SCARD_E_INVALID_VALUE);
		if (rgReaderStates[i].dwCurrentState & SCARD_STATE_IGNORE)
			continue;
		all_ignored = false;
		if (strcasecmp(name, PNP_READER_NAME) != 0 && !calais__reader_find(name))
			return leave(SCARD_E_UNKNOWN_READER);
	}
	if (all_ignored)
		return leave(SCARD_S_SUCCESS);

	/* INFINITE, and its sign-extended 64-bit form, wait for ever. */
	bool forever = dwTimeout == INFINITE || dwTimeout == (DWORD)-1;
	uint64_t deadline = forever ? UINT64_MAX : calais__now_ms() + dwTimeout;
	uint32_t gen = c->cancel_gen;
	uint16_t pnp_start = M->pnp_counter;
	LONG rv;

	c->refs++;
	c->waiters++;
	struct calais__sc_waiter w = { .next = M->sc_waiters, .states = rgReaderStates,
		                       .n = cReaders };
	calais__cond_init(&w.cond);
	if (M->sc_waiters)
		M->sc_waiters->prev = &w;
	M->sc_waiters = &w;
	for (;;) {
		if (M->stopping || c->dead || c->cancel_gen != gen) {
			rv = SCARD_E_CANCELLED;
			break;
		}
		if (scan_states(rgReaderStates, cReaders, pnp_start)) {
			rv = SCARD_S_SUCCESS;
			break;
		}
		if (dwTimeout == 0) {
			rv = SCARD_E_TIMEOUT;
			break;
		}
		if (forever)
			calais__cond_wait(&w.cond, &M->lock);
		else if (!calais__cond_wait_until(&w.cond, &M->lock, deadline) &&
		         calais__now_ms() >= deadline) {
			/* One last look: an event and the timeout may come together. */
			rv = scan_states(rgReaderStates, cReaders, pnp_start) ? SCARD_S_SUCCESS
			                                                      : SCARD_E_TIMEOUT;
			break;
		}
	}
	if (w.prev)
		w.prev->next = w.next;
	else
		M->sc_waiters = w.next;
	if (w.next)
		w.next->prev = w.prev;
	calais__cond_destroy(&w.cond);
	c->waiters--;
	ctx_unref(c);
	return leave(rv);
}

/* ---- I/O -------------------------------------------------------------------------------- */

LONG SCardTransmit(SCARDHANDLE hCard, const SCARD_IO_REQUEST *pioSendPci, LPCBYTE pbSendBuffer,
                   DWORD cbSendLength, SCARD_IO_REQUEST *pioRecvPci, LPBYTE pbRecvBuffer,
                   LPDWORD pcbRecvLength)
{
	if (!pioSendPci || !pbSendBuffer || !pbRecvBuffer || !pcbRecvLength || cbSendLength == 0)
		return SCARD_E_INVALID_PARAMETER;
	if (cbSendLength > MAX_BUFFER_SIZE_EXTENDED || *pcbRecvLength < 2)
		return SCARD_E_INSUFFICIENT_BUFFER;
	if (enter() != SCARD_S_SUCCESS)
		return SCARD_E_INVALID_HANDLE;
	struct calais_handle *h = handle_get(hCard);
	if (!h)
		return leave(SCARD_E_INVALID_HANDLE);
	LONG rv = acquire_io(h, true);
	if (rv != SCARD_S_SUCCESS) {
		handle_unref(h);
		return leave(rv);
	}
	struct calais_reader *r = h->reader;
	DWORD proto = pioSendPci->dwProtocol;
	if (proto == PROTOCOL_ANY_OLD)
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
		rv = r->bi->be->transmit(r, proto, pbSendBuffer, cbSendLength, pbRecvBuffer, &rx_len,
		                         M->cfg.exchange_timeout_ms);
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
		touch_tx(h);
	}
	io_end(r);
	if (rv == SCARD_W_REMOVED_CARD && r->card != CALAIS__CARD_ABSENT) {
		calais__mutex_unlock(&M->lock);
		calais_reader_card_event(r, false);
		calais__mutex_lock(&M->lock);
	} else if (rv == SCARD_E_READER_UNAVAILABLE) {
		calais__mutex_unlock(&M->lock);
		calais__reader_lost(r);
		calais__mutex_lock(&M->lock);
	}
	handle_unref(h);
	return leave(rv);
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
	if (enter() != SCARD_S_SUCCESS)
		return SCARD_E_INVALID_HANDLE;
	struct calais_handle *h = handle_get(hCard);
	if (!h)
		return leave(SCARD_E_INVALID_HANDLE);
	LONG rv = acquire_io(h, false);
	if (rv != SCARD_S_SUCCESS) {
		handle_unref(h);
		return leave(rv);
	}
	struct calais_reader *r = h->reader;
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
		if ((rv == SCARD_S_SUCCESS && out_len > cbRecvLength)) {
			calais__err("\"%s\": backend overran the control buffer", r->name);
			rv = SCARD_F_INTERNAL_ERROR;
			out_len = 0;
		}
		if (rv == SCARD_S_SUCCESS || rv == SCARD_E_INSUFFICIENT_BUFFER)
			*lpBytesReturned = (DWORD)out_len;
	}
	touch_tx(h);
	io_end(r);
	if (rv == SCARD_E_READER_UNAVAILABLE) {
		calais__mutex_unlock(&M->lock);
		calais__reader_lost(r);
		calais__mutex_lock(&M->lock);
	}
	handle_unref(h);
	return leave(rv);
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
	if (enter() != SCARD_S_SUCCESS)
		return SCARD_E_INVALID_HANDLE;
	struct calais_handle *h = handle_get(hCard);
	if (!h)
		return leave(SCARD_E_INVALID_HANDLE);
	LONG rv = acquire_io(h, true);
	if (rv != SCARD_S_SUCCESS) {
		handle_unref(h);
		return leave(rv);
	}
	struct calais_reader *r = h->reader;
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
		rv = put_out(pbAttr, pcbAttrLen, value, len, false);
	touch_tx(h);
	io_end(r);
	handle_unref(h);
	return leave(rv);
}

LONG SCardSetAttrib(SCARDHANDLE hCard, DWORD dwAttrId, LPCBYTE pbAttr, DWORD cbAttrLen)
{
	if (!pbAttr || cbAttrLen == 0)
		return SCARD_E_INVALID_PARAMETER;
	if (enter() != SCARD_S_SUCCESS)
		return SCARD_E_INVALID_HANDLE;
	struct calais_handle *h = handle_get(hCard);
	if (!h)
		return leave(SCARD_E_INVALID_HANDLE);
	LONG rv = acquire_io(h, true);
	if (rv != SCARD_S_SUCCESS) {
		handle_unref(h);
		return leave(rv);
	}
	struct calais_reader *r = h->reader;
	if (!r->bi->be->set_attrib) {
		rv = SCARD_E_UNSUPPORTED_FEATURE;
	} else {
		calais__mutex_unlock(&M->lock);
		rv = r->bi->be->set_attrib(r, (uint32_t)dwAttrId, pbAttr, cbAttrLen);
		calais__mutex_lock(&M->lock);
	}
	touch_tx(h);
	io_end(r);
	handle_unref(h);
	return leave(rv);
}

/* At shutdown: frees every context and handle. Nothing else runs. */
void calais__contexts_free_all(void)
{
	calais__mutex_lock(&M->lock);
	for (unsigned i = 0; i < CALAIS__HASH_SIZE; i++) {
		while (M->handle_hash[i]) {
			struct calais_handle *h = M->handle_hash[i];
			M->handle_hash[i] = h->hash_next;
			/* A reader removed earlier lives on only through its handles. */
			if (h->reader)
				calais__reader_unref(h->reader);
			free(h);
		}
	}
	for (unsigned i = 0; i < CALAIS__HASH_SIZE; i++) {
		while (M->ctx_hash[i]) {
			struct calais_context *c = M->ctx_hash[i];
			M->ctx_hash[i] = c->hash_next;
			free(c);
		}
	}
	calais__mutex_unlock(&M->lock);
}
