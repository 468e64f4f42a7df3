/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The PC/SC API's status-change wait: SCardGetStatusChange() and the scan of the
 * caller's reader states, the PnP notification entry included. */
#include "api.h"

#include <string.h>
#include <strings.h>

#define M (&calais__mgr)
#define PNP_READER_NAME "\\\\?PnP?\\Notification"

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
			e->dwEventState = 0; /* pcsc-lite clears it and leaves the rest */
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
	/* pcsc-lite's order: the array is checked, and an empty or all-ignored one
	 * returns, before the context is (nothing is written then). */
	if (!rgReaderStates && cReaders > 0)
		return SCARD_E_INVALID_PARAMETER;
	bool all_ignored = true;
	for (DWORD i = 0; i < cReaders; i++) {
		if (!rgReaderStates[i].szReader)
			return SCARD_E_INVALID_VALUE;
		if (!(rgReaderStates[i].dwCurrentState & SCARD_STATE_IGNORE))
			all_ignored = false;
	}
	if (all_ignored)
		return SCARD_S_SUCCESS;
	if (calais__enter() != SCARD_S_SUCCESS)
		return SCARD_E_INVALID_HANDLE;
	struct calais_context *c = calais__ctx_lookup(hContext);
	if (!c)
		return calais__leave(SCARD_E_INVALID_HANDLE);
	/* An unknown name fails the call before any entry is written. */
	for (DWORD i = 0; i < cReaders; i++) {
		const char *name = rgReaderStates[i].szReader;
		if (!(rgReaderStates[i].dwCurrentState & SCARD_STATE_IGNORE) &&
		    strcasecmp(name, PNP_READER_NAME) != 0 && !calais__reader_find(name))
			return calais__leave(SCARD_E_UNKNOWN_READER);
	}

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
	calais__ctx_unref(c);
	return calais__leave(rv);
}
