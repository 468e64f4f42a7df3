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

/* The PC/SC output-buffer rules (see lib/context.c). */
LONG calais__put_out(void *buf, DWORD *len, const void *data, size_t n, bool null_is_error);

/* ---- lib/card.c --------------------------------------------------------------------- */

/* Disconnects h and frees it once no call holds it. mgr.lock held; may be dropped. */
void calais__disconnect(struct calais_handle *h, DWORD disp);
/* Marks the use of h's transaction, if h holds one (the transaction timeout). */
void calais__touch_tx(struct calais_handle *h);

/* The reader's I/O section (mgr.lock held on entry and exit): waits for h's turn (with
 * check_events, a pending reset or removal is reported first) and takes the reader's
 * io_lock; calais__io_end() gives it back. */
LONG calais__acquire_io(struct calais_handle *h, bool check_events);
void calais__io_end(struct calais_reader *r);

#endif /* CALAIS_API_H */
