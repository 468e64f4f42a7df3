/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The PC/SC API's internal header: what its files (context.c, card.c, io.c, status.c)
 * share. Nothing outside them includes it. */
#ifndef CALAIS_API_H
#define CALAIS_API_H

#include "calais-internal.h"

/* pcsc-lite still accepts the pre-1.0 "any protocol" value in preferred protocols and
 * send PCIs. */
#define CALAIS__PROTOCOL_ANY_OLD 0x1000u

/* ---- lib/context.c ------------------------------------------------------------------ */

/* Entering and leaving the manager around every call (lib/context.c says why):
 * calais__enter() takes mgr.lock unless it fails; calais__leave() drops it and returns
 * rv. */
LONG calais__enter(void);
LONG calais__leave(LONG rv);

/* The context and handle tables; mgr.lock held for all of them. */
struct calais_context *calais__ctx_lookup(SCARDCONTEXT id);
struct calais_handle *calais__handle_lookup(SCARDHANDLE id);
void calais__ctx_unref(struct calais_context *c);
void calais__handle_unref(struct calais_handle *h);
/* Looks a handle up and holds it (and its context) for the call. */
struct calais_handle *calais__handle_get(SCARDHANDLE id);
void calais__handle_hash_add(struct calais_handle *h);
void calais__handle_unhash(struct calais_handle *h);

/* The PC/SC output-buffer rules (see lib/context.c). With prefix, a buffer too small
 * still receives the value's first *len bytes (pcsc-lite's SCardStatus, SCardGetAttrib). */
LONG calais__put_out(void *buf, DWORD *len, const void *data, size_t n, bool prefix);
/* SCARD_S_SUCCESS when hCard is a live handle, else SCARD_E_INVALID_HANDLE: the calls
 * that pcsc-lite's client checks the handle of before their other arguments. */
LONG calais__handle_check(SCARDHANDLE hCard);

/* ---- lib/card.c --------------------------------------------------------------------- */

/* Disconnects h and frees it once no call holds it. mgr.lock held; may be dropped. */
void calais__disconnect(struct calais_handle *h, DWORD disp);
/* Marks the use of h's transaction, if h holds one (the transaction timeout). */
void calais__touch_tx(struct calais_handle *h);

/* A call on a card handle that works inside the reader's I/O section: SCardTransmit,
 * SCardControl, SCardGetAttrib, SCardSetAttrib, SCardReconnect. */
struct calais__call {
	struct calais_handle *h;
	/* h's reader when the section began: h->reader is cleared if another thread
	 * disconnects h while mgr.lock is dropped, and the section is still this one's. */
	struct calais_reader *r;
};

/* How a call meets the reader's turn (calais__call_begin). */
enum {
	/* A pending reset or removal of the handle is reported (until SCardReconnect). */
	CALAIS__TURN_EVENTS = 1 << 0,
	/* Another handle's transaction is not waited for: SCARD_E_SHARING_VIOLATION at once,
	 * as pcsc-lite's SCardControl, SCardGetAttrib and SCardSetAttrib answer (its client
	 * retries only Transmit, Status, Reconnect and BeginTransaction). */
	CALAIS__TURN_NO_WAIT = 1 << 1,
};

/* Enters the manager, looks hCard up and holds it, waits for the reader's turn (how:
 * CALAIS__TURN_*) and takes its io_lock. On success mgr.lock and the io_lock are held;
 * otherwise everything is undone and the call's return code is returned. */
LONG calais__call_begin(struct calais__call *call, SCARDHANDLE hCard, unsigned how);

/* What calais__call_end() does after the I/O section, from the backend's answer. */
enum {
	CALAIS__CALL_REMOVED = 1 << 0, /* SCARD_W_REMOVED_CARD: report the card removed */
	CALAIS__CALL_LOST = 1 << 1,    /* SCARD_E_READER_UNAVAILABLE: report the reader lost */
};

/* Ends the I/O section, does the follow_up (CALAIS__CALL_*) rv calls for, releases the
 * handle and leaves the manager; returns rv. */
LONG calais__call_end(struct calais__call *call, LONG rv, unsigned follow_up);

#endif /* CALAIS_API_H */
