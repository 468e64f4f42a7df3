/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The PC/SC API's contexts: entering and leaving the manager, the context and handle
 * tables, the output-buffer rules, SCardEstablishContext() to SCardFreeMemory(), and the
 * reader and group lists. */
#include "api.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define M (&calais__mgr)

/* ---- entering and leaving the manager ---------------------------------------------- */

/* Every call runs between calais__enter() and calais__leave() with mgr.lock held
 * (dropped only around I/O and waits), so shutdown can wait for calls in progress to
 * drain. */
LONG calais__enter(void)
{
	calais__mutex_lock(&M->lock);
	if (!M->running || M->stopping) {
		calais__mutex_unlock(&M->lock);
		return SCARD_E_INVALID_HANDLE;
	}
	M->active_calls++;
	return SCARD_S_SUCCESS;
}

LONG calais__leave(LONG rv)
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

struct calais_context *calais__ctx_lookup(SCARDCONTEXT id)
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

struct calais_handle *calais__handle_lookup(SCARDHANDLE id)
{
	if (id == 0 || (uint64_t)(ULONG)id >> 32)
		return NULL;
	for (struct calais_handle *h = M->handle_hash[bucket((uint64_t)id)]; h; h = h->hash_next)
		if (h->id == id && !h->dead)
			return h;
	return NULL;
}

void calais__ctx_unref(struct calais_context *c)
{
	if (--c->refs == 0)
		free(c);
}

void calais__handle_unref(struct calais_handle *h)
{
	if (--h->refs == 0) {
		calais__ctx_unref(h->ctx);
		free(h);
	}
}

/* Looks a handle up and holds it (and its context) for the call. */
struct calais_handle *calais__handle_get(SCARDHANDLE id)
{
	struct calais_handle *h = calais__handle_lookup(id);
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

void calais__handle_hash_add(struct calais_handle *h)
{
	unsigned b = bucket((uint64_t)h->id);
	h->hash_next = M->handle_hash[b];
	M->handle_hash[b] = h;
}

void calais__handle_unhash(struct calais_handle *h)
{
	for (struct calais_handle **pp = &M->handle_hash[bucket((uint64_t)h->id)]; *pp; pp = &(*pp)->hash_next)
		if (*pp == h) {
			*pp = h->hash_next;
			return;
		}
}

/* ---- buffers --------------------------------------------------------------------- */

/*
 * The PC/SC output-buffer rules, in one place, as pcsc-lite's client applies them: a
 * NULL length pointer skips the value; a length of SCARD_AUTOALLOCATE means buf is a
 * pointer to a pointer that receives a malloc'd copy (freed with SCardFreeMemory), and
 * a NULL buf is then SCARD_E_INVALID_PARAMETER; a NULL buffer is a size query; a small
 * buffer gives SCARD_E_INSUFFICIENT_BUFFER (with prefix, it receives what fits). The
 * needed size is written back on every path.
 */
LONG calais__put_out(void *buf, DWORD *len, const void *data, size_t n, bool prefix)
{
	if (!len)
		return SCARD_S_SUCCESS;
	DWORD cap = *len;
	*len = (DWORD)n;
	if (cap == SCARD_AUTOALLOCATE) {
		if (!buf)
			return SCARD_E_INVALID_PARAMETER;
		void *p = malloc(n ? n : 1);
		if (!p)
			return SCARD_E_NO_MEMORY;
		memcpy(p, data, n);
		*(void **)buf = p;
		return SCARD_S_SUCCESS;
	}
	if (!buf)
		return SCARD_S_SUCCESS;
	if (cap < n) {
		if (prefix)
			memcpy(buf, data, cap);
		return SCARD_E_INSUFFICIENT_BUFFER;
	}
	memcpy(buf, data, n);
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
	if (calais__ensure_started() != SCARD_S_SUCCESS || calais__enter() != SCARD_S_SUCCESS)
		return SCARD_E_NO_SERVICE;
	struct calais_context *c = calloc(1, sizeof(*c));
	if (!c)
		return calais__leave(SCARD_E_NO_MEMORY);
	do
		c->id = (SCARDCONTEXT)calais__random32();
	while (c->id == 0 || calais__ctx_lookup(c->id));
	c->refs = 1;
	unsigned b = bucket((uint64_t)c->id);
	c->hash_next = M->ctx_hash[b];
	M->ctx_hash[b] = c;
	*phContext = c->id;
	return calais__leave(SCARD_S_SUCCESS);
}

LONG SCardIsValidContext(SCARDCONTEXT hContext)
{
	if (calais__enter() != SCARD_S_SUCCESS)
		return SCARD_E_INVALID_HANDLE;
	return calais__leave(calais__ctx_lookup(hContext) ? SCARD_S_SUCCESS : SCARD_E_INVALID_HANDLE);
}


LONG SCardReleaseContext(SCARDCONTEXT hContext)
{
	if (calais__enter() != SCARD_S_SUCCESS)
		return SCARD_E_INVALID_HANDLE;
	struct calais_context *c = calais__ctx_lookup(hContext);
	if (!c)
		return calais__leave(SCARD_E_INVALID_HANDLE);
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
		calais__disconnect(h, owner ? SCARD_RESET_CARD : SCARD_LEAVE_CARD);
		calais__handle_unref(h);
	}
	calais__ctx_unref(c);
	return calais__leave(SCARD_S_SUCCESS);
}

LONG SCardCancel(SCARDCONTEXT hContext)
{
	if (calais__enter() != SCARD_S_SUCCESS)
		return SCARD_E_INVALID_HANDLE;
	struct calais_context *c = calais__ctx_lookup(hContext);
	if (!c)
		return calais__leave(SCARD_E_INVALID_HANDLE);
	/* Waiters compare the generation they started with, so a cancel with nothing
	 * pending leaves nothing behind for the next call. */
	c->cancel_gen++;
	calais__reader_state_changed(NULL);
	for (struct calais_reader *r = M->readers; r; r = r->next)
		if (r->tx_owner)
			calais__cond_broadcast(&r->lock_cond);
	return calais__leave(SCARD_S_SUCCESS);
}

LONG SCardFreeMemory(SCARDCONTEXT hContext, LPCVOID pvMem)
{
	if (calais__enter() != SCARD_S_SUCCESS)
		return SCARD_E_INVALID_HANDLE;
	if (!calais__ctx_lookup(hContext))
		return calais__leave(SCARD_E_INVALID_HANDLE);
	free((void *)(uintptr_t)pvMem);
	return calais__leave(SCARD_S_SUCCESS);
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
	if (calais__enter() != SCARD_S_SUCCESS)
		return SCARD_E_INVALID_HANDLE;
	if (!calais__ctx_lookup(hContext))
		return calais__leave(SCARD_E_INVALID_HANDLE);

	/* The needed length is written on every path past the context, 1 (the empty
	 * multi-string) when there is no reader, as pcsc-lite does. */
	size_t n = 1;
	bool any = M->readers && groups_match(mszGroups);
	if (any)
		for (struct calais_reader *r = M->readers; r; r = r->next)
			n += strlen(r->name) + 1;
	if (!any) {
		*pcchReaders = 1;
		return calais__leave(SCARD_E_NO_READERS_AVAILABLE);
	}

	char stackbuf[1024];
	char *list = n <= sizeof(stackbuf) ? stackbuf : malloc(n);
	if (!list)
		return calais__leave(SCARD_E_NO_MEMORY);
	char *p = list;
	for (struct calais_reader *r = M->readers; r; r = r->next) {
		size_t l = strlen(r->name) + 1;
		memcpy(p, r->name, l);
		p += l;
	}
	*p = '\0';
	LONG rv = calais__put_out(mszReaders, pcchReaders, list, n, false);
	if (list != stackbuf)
		free(list);
	return calais__leave(rv);
}

/* The context first, as pcsc-lite, which then reads *pcchGroups unchecked (a NULL
 * pointer is refused here instead). */
LONG SCardListReaderGroups(SCARDCONTEXT hContext, LPSTR mszGroups, LPDWORD pcchGroups)
{
	if (calais__enter() != SCARD_S_SUCCESS)
		return SCARD_E_INVALID_HANDLE;
	if (!calais__ctx_lookup(hContext))
		return calais__leave(SCARD_E_INVALID_HANDLE);
	if (!pcchGroups)
		return calais__leave(SCARD_E_INVALID_PARAMETER);
	return calais__leave(calais__put_out(mszGroups, pcchGroups, default_group,
	                                     sizeof(default_group), false));
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
