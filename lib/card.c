/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The PC/SC API's card handles: the reader's turn and I/O section (with the begin and
 * end of every call that works in one), connecting (power, protocol choice, sharing),
 * reconnecting, disconnecting with a disposition, transactions, and SCardStatus(). */
#include "api.h"

#include <stdlib.h>
#include <string.h>

#define M (&calais__mgr)

/* ---- I/O sections -------------------------------------------------------------------- */

/* Takes the reader's io_lock in the right order. mgr.lock held on entry and exit. */
/* An I/O section on r (calais__reader_io_begin) holding a reference on r for its
 * length; io_end() drops it, so the caller must not touch r afterwards unless it holds
 * one of its own. mgr.lock held. */
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
 * itself; with CALAIS__TURN_NO_WAIT, such a transaction is SCARD_E_SHARING_VIOLATION
 * at once, before any pending event (pcsc-lite checks the lock first). With
 * CALAIS__TURN_EVENTS, a pending reset or removal is reported (until SCardReconnect).
 * mgr.lock held.
 */
static LONG wait_turn(struct calais_handle *h, unsigned how)
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
		bool other_tx = r->tx_owner && r->tx_owner != h;
		if (other_tx && (how & CALAIS__TURN_NO_WAIT))
			return SCARD_E_SHARING_VIOLATION;
		if ((how & CALAIS__TURN_EVENTS) && h->pending)
			return pending_event(h);
		if (!other_tx)
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
static LONG acquire_io(struct calais_handle *h, unsigned how)
{
	for (;;) {
		LONG rv = wait_turn(h, how);
		if (rv != SCARD_S_SUCCESS)
			return rv;
		struct calais_reader *r = h->reader;
		io_begin(r);
		/* Another handle may have begun a transaction while we waited for I/O. */
		if (h->reader == r && !r->removed && !h->dead && (!r->tx_owner || r->tx_owner == h) &&
		    !((how & CALAIS__TURN_EVENTS) && h->pending) && !M->stopping)
			return SCARD_S_SUCCESS;
		io_end(r);
	}
}

void calais__touch_tx(struct calais_handle *h)
{
	if (h->reader && h->reader->tx_owner == h)
		h->reader->tx_last_use_ms = calais__now_ms();
}

LONG calais__handle_check(SCARDHANDLE hCard)
{
	if (calais__enter() != SCARD_S_SUCCESS)
		return SCARD_E_INVALID_HANDLE;
	return calais__leave(calais__handle_lookup(hCard) ? SCARD_S_SUCCESS : SCARD_E_INVALID_HANDLE);
}

/* One prologue and one epilogue for the calls in an I/O section (lib/api.h). */
LONG calais__call_begin(struct calais__call *call, SCARDHANDLE hCard, unsigned how)
{
	if (calais__enter() != SCARD_S_SUCCESS)
		return SCARD_E_INVALID_HANDLE;
	struct calais_handle *h = calais__handle_get(hCard);
	if (!h)
		return calais__leave(SCARD_E_INVALID_HANDLE);
	LONG rv = acquire_io(h, how);
	if (rv != SCARD_S_SUCCESS) {
		calais__handle_unref(h);
		return calais__leave(rv);
	}
	call->h = h;
	call->r = h->reader;
	return SCARD_S_SUCCESS;
}

LONG calais__call_end(struct calais__call *call, LONG rv, unsigned follow_up)
{
	struct calais_reader *r = call->r;
	/* The section's reference is kept until the follow-up is done: another thread may
	 * disconnect the last handle meanwhile, and a removed reader then lives on only
	 * through this call. */
	calais__reader_io_end(r);
	/* Reported without mgr.lock: both take it themselves. */
	if ((follow_up & CALAIS__CALL_REMOVED) && rv == SCARD_W_REMOVED_CARD &&
	    r->card != CALAIS__CARD_ABSENT) {
		calais__mutex_unlock(&M->lock);
		calais_reader_card_event(r, false);
		calais__mutex_lock(&M->lock);
	} else if ((follow_up & CALAIS__CALL_LOST) && rv == SCARD_E_READER_UNAVAILABLE) {
		calais__mutex_unlock(&M->lock);
		calais__reader_lost(r);
		calais__mutex_lock(&M->lock);
	}
	calais__reader_unref(r);
	calais__handle_unref(call->h);
	return calais__leave(rv);
}

/* ---- connecting ----------------------------------------------------------------------- */

static bool valid_share(DWORD s)
{
	return s == SCARD_SHARE_EXCLUSIVE || s == SCARD_SHARE_SHARED || s == SCARD_SHARE_DIRECT;
}

static bool valid_protocols(DWORD p)
{
	return (p & (SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1 | SCARD_PROTOCOL_RAW |
	             CALAIS__PROTOCOL_ANY_OLD)) != 0;
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
			return rv == SCARD_E_READER_UNAVAILABLE || rv == SCARD_E_NO_SMARTCARD ||
			               rv == SCARD_E_NO_SERVICE
			               ? rv
			               : SCARD_W_UNRESPONSIVE_CARD;
		if (r->card != CALAIS__CARD_POWERED)
			return SCARD_E_NO_SMARTCARD;
	}
	if (preferred & CALAIS__PROTOCOL_ANY_OLD)
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
		/* Cut short by the card's or reader's end, or the shutdown: said as such. */
		rv = calais__reader_io_rv(r, rv);
		if (rv == SCARD_W_REMOVED_CARD || rv == SCARD_E_READER_UNAVAILABLE ||
		    rv == SCARD_E_NO_SERVICE)
			return rv;
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
	/* pcsc-lite's order of checks and outputs: *phCard is 0 from the start, the
	 * protocol is 0 once the context is known (and not touched before). */
	if (!phCard || !pdwActiveProtocol)
		return SCARD_E_INVALID_PARAMETER;
	*phCard = 0;
	if (!szReader)
		return SCARD_E_UNKNOWN_READER;
	if (strlen(szReader) > MAX_READERNAME)
		return SCARD_E_INVALID_VALUE;
	if (calais__enter() != SCARD_S_SUCCESS)
		return SCARD_E_INVALID_HANDLE;
	struct calais_context *c = calais__ctx_lookup(hContext);
	if (!c)
		return calais__leave(SCARD_E_INVALID_HANDLE);
	*pdwActiveProtocol = SCARD_PROTOCOL_UNDEFINED;
	if (dwShareMode != SCARD_SHARE_DIRECT && !valid_protocols(dwPreferredProtocols))
		return calais__leave(SCARD_E_PROTO_MISMATCH);
	if (!valid_share(dwShareMode))
		return calais__leave(SCARD_E_INVALID_VALUE);
	struct calais_reader *r = calais__reader_find(szReader);
	if (!r)
		return calais__leave(SCARD_E_UNKNOWN_READER);

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
		while (h->id == 0 || calais__handle_lookup(h->id));
		h->ctx = c;
		c->refs++;
		h->refs = 1;
		h->reader = r;
		r->refs++;
		h->share = dwShareMode;
		h->protocol = active;
		calais__handle_hash_add(h);
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
	calais__ctx_unref(c);
	return calais__leave(rv);
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
void calais__disconnect(struct calais_handle *h, DWORD disp)
{
	struct calais_reader *r = h->reader;
	h->dead = true;
	calais__handle_unhash(h);
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
	calais__handle_unref(h);
}

static bool valid_disposition(DWORD d)
{
	return d == SCARD_LEAVE_CARD || d == SCARD_RESET_CARD || d == SCARD_UNPOWER_CARD ||
	       d == SCARD_EJECT_CARD;
}

/* Waits only with a disposition that touches the card while another handle holds a
 * transaction (calais__disconnect), as pcscd does. */
LONG SCardDisconnect(SCARDHANDLE hCard, DWORD dwDisposition)
{
	if (calais__enter() != SCARD_S_SUCCESS)
		return SCARD_E_INVALID_HANDLE;
	struct calais_handle *h = calais__handle_get(hCard);
	if (!h)
		return calais__leave(SCARD_E_INVALID_HANDLE);
	if (!valid_disposition(dwDisposition)) {
		calais__handle_unref(h);
		return calais__leave(SCARD_E_INVALID_VALUE);
	}
	calais__disconnect(h, dwDisposition);
	calais__handle_unref(h);
	return calais__leave(SCARD_S_SUCCESS);
}

LONG SCardReconnect(SCARDHANDLE hCard, DWORD dwShareMode, DWORD dwPreferredProtocols,
                    DWORD dwInitialization, LPDWORD pdwActiveProtocol)
{
	/* pcsc-lite's order: the handle, then the values; *pdwActiveProtocol is written on
	 * success only. Another handle's transaction is waited for (its client retries). */
	if (!pdwActiveProtocol)
		return SCARD_E_INVALID_PARAMETER;
	LONG rv = calais__handle_check(hCard);
	if (rv != SCARD_S_SUCCESS)
		return rv;
	if (dwInitialization != SCARD_LEAVE_CARD && dwInitialization != SCARD_RESET_CARD &&
	    dwInitialization != SCARD_UNPOWER_CARD)
		return SCARD_E_INVALID_VALUE;
	if (!valid_share(dwShareMode))
		return SCARD_E_INVALID_VALUE;
	if (dwShareMode != SCARD_SHARE_DIRECT && !valid_protocols(dwPreferredProtocols))
		return SCARD_E_PROTO_MISMATCH;
	struct calais__call call;
	rv = calais__call_begin(&call, hCard, 0);
	if (rv != SCARD_S_SUCCESS)
		return rv;
	struct calais_handle *h = call.h;
	struct calais_reader *r = call.r;
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
		    rv != SCARD_E_READER_UNAVAILABLE && rv != SCARD_E_NO_SERVICE)
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
		calais__touch_tx(h);
		calais__reader_state_changed(r);
	}
	return calais__call_end(&call, rv, 0);
}


/* ---- transactions --------------------------------------------------------------------- */

LONG SCardBeginTransaction(SCARDHANDLE hCard)
{
	if (calais__enter() != SCARD_S_SUCCESS)
		return SCARD_E_INVALID_HANDLE;
	struct calais_handle *h = calais__handle_get(hCard);
	if (!h)
		return calais__leave(SCARD_E_INVALID_HANDLE);
	LONG rv = wait_turn(h, CALAIS__TURN_EVENTS);
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
		calais__touch_tx(h);
		if (M->cfg.transaction_timeout_ms)
			calais__worker_kick();
	}
	calais__handle_unref(h);
	return calais__leave(rv);
}

/* Never waits: another handle's transaction is SCARD_E_SHARING_VIOLATION (pcscd). */
LONG SCardEndTransaction(SCARDHANDLE hCard, DWORD dwDisposition)
{
	if (calais__enter() != SCARD_S_SUCCESS)
		return SCARD_E_INVALID_HANDLE;
	struct calais_handle *h = calais__handle_get(hCard);
	if (!h)
		return calais__leave(SCARD_E_INVALID_HANDLE);
	struct calais_reader *r = h->reader;
	LONG rv = SCARD_S_SUCCESS;
	if (!valid_disposition(dwDisposition))
		rv = SCARD_E_INVALID_VALUE;
	else if (!r || r->removed)
		rv = SCARD_E_READER_UNAVAILABLE;
	else if (h->pending)
		rv = pending_event(h);
	else if (r->tx_owner && r->tx_owner != h)
		rv = SCARD_E_SHARING_VIOLATION;
	else if (r->tx_owner != h)
		rv = SCARD_E_NOT_TRANSACTED;
	if (rv == SCARD_S_SUCCESS) {
		/* Held across the section: a disconnect of h by another thread while the
		 * section waits for the io_lock drops the handle's reference. */
		r->refs++;
		if (dwDisposition != SCARD_LEAVE_CARD) {
			calais__reader_io_begin(r);
			/* The caller is told of its own reset too, as in pcsc-lite. */
			apply_disposition(r, h, dwDisposition, true);
			calais__reader_io_end(r);
		}
		if (r->tx_owner == h && --r->tx_depth == 0)
			calais__reader_release_tx(r);
		calais__reader_unref(r);
	}
	calais__handle_unref(h);
	return calais__leave(rv);
}

/* ---- status ----------------------------------------------------------------------------- */

static DWORD card_state_bits(const struct calais_reader *r)
{
	switch (r->card) {
	case CALAIS__CARD_POWERED:
		/* pcscd never reports SCARD_SPECIFIC, protocol chosen or not. */
		return SCARD_PRESENT | SCARD_POWERED | SCARD_NEGOTIABLE;
	case CALAIS__CARD_UNPOWERED:
	case CALAIS__CARD_MUTE:
		return SCARD_PRESENT | SCARD_SWALLOWED;
	default:
		return SCARD_ABSENT;
	}
}

/*
 * Every output is set on every path, as pcsc-lite's client does: the state, protocol
 * and both lengths are 0 until the card's are known (a failure leaves them 0); a buffer
 * given without its length pointer counts as 0 bytes long. On success or
 * SCARD_E_INSUFFICIENT_BUFFER both needed lengths are reported and a buffer too small
 * receives what fits. Another handle's transaction is waited for (pcsc-lite's client
 * retries); a pending reset or removal is reported.
 */
LONG SCardStatus(SCARDHANDLE hCard, LPSTR szReaderName, LPDWORD pcchReaderLen, LPDWORD pdwState,
                 LPDWORD pdwProtocol, LPBYTE pbAtr, LPDWORD pcbAtrLen)
{
	DWORD no_name_len = 0, no_atr_len = 0;
	if (pdwState)
		*pdwState = 0;
	if (pdwProtocol)
		*pdwProtocol = 0;
	if (!pcchReaderLen)
		pcchReaderLen = &no_name_len;
	if (!pcbAtrLen)
		pcbAtrLen = &no_atr_len;
	DWORD name_cap = *pcchReaderLen, atr_cap = *pcbAtrLen;
	*pcchReaderLen = 0;
	*pcbAtrLen = 0;
	if (calais__enter() != SCARD_S_SUCCESS)
		return SCARD_E_INVALID_HANDLE;
	struct calais_handle *h = calais__handle_get(hCard);
	if (!h)
		return calais__leave(SCARD_E_INVALID_HANDLE);
	LONG rv = wait_turn(h, CALAIS__TURN_EVENTS);
	if (rv == SCARD_S_SUCCESS) {
		struct calais_reader *r = h->reader;
		size_t atr_len = r->card == CALAIS__CARD_ABSENT ? 0 : r->atr_len;
		if (pdwState)
			*pdwState = card_state_bits(r) | ((DWORD)r->event_counter << 16);
		/* The card's protocol, as pcscd reports it (a DIRECT handle sees the one
		 * another connection chose). */
		if (pdwProtocol)
			*pdwProtocol = r->card == CALAIS__CARD_POWERED ? r->protocol : 0;
		*pcchReaderLen = name_cap;
		*pcbAtrLen = atr_cap;
		rv = calais__put_out(szReaderName, pcchReaderLen, r->name, strlen(r->name) + 1, true);
		/* A name that could not be stored at all ends the call (pcsc-lite); a short
		 * buffer still lets the ATR be stored. */
		if (rv == SCARD_S_SUCCESS || rv == SCARD_E_INSUFFICIENT_BUFFER) {
			LONG rv2 = calais__put_out(pbAtr, pcbAtrLen, r->atr, atr_len, true);
			if (rv2 != SCARD_S_SUCCESS && (rv == SCARD_S_SUCCESS || rv2 != SCARD_E_INSUFFICIENT_BUFFER))
				rv = rv2;
		} else {
			*pcbAtrLen = (DWORD)atr_len;
		}
		calais__touch_tx(h);
	}
	calais__handle_unref(h);
	return calais__leave(rv);
}
