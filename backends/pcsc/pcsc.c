/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The PC/SC passthrough backend: the platform's own PC/SC service (pcscd, the macOS
 * framework, SCardSvr) as a transport. Its library is loaded at run time and reached only
 * through function pointers, so its SCard* never meet ours. One watcher thread sits in
 * the service's SCardGetStatusChange (readers and `\\?PnP?\Notification`) and pushes
 * arrivals, removals and card movement into the core; card operations are forwarded on a
 * service connection opened shared, held exclusively only for the application's
 * transactions and exclusive connections. */
#include "calais-internal.h"
#include "platform/dl.h"

#include <stdio.h>
#include <stdlib.h>

#define pcsc_log(level, ...)                                                         \
	do {                                                                         \
		if (CALAIS__LOG_ON(level))                                    \
			calais__log((level), "pcsc", __VA_ARGS__);                   \
	} while (0)

#define BACKOFF_MIN_MS 250
#define BACKOFF_MAX_MS 5000
#define FIRST_SYNC_MS 500 /* how long start-up waits for the service's readers */
#define MAX_SVC_READERS 64

#if defined(_WIN32)
#define SYM_A "A"
static const char *const default_libs[] = { "winscard.dll", NULL };
#elif defined(__APPLE__)
#define SYM_A ""
static const char *const default_libs[] = { "/System/Library/Frameworks/PCSC.framework/PCSC",
	                                    NULL };
#else
#define SYM_A ""
/* pcsc-lite 2.1+ may install libpcsclite.so.1 as a shim that loads libpcsclite_real.so.1
 * (or LIBPCSCLITE_DELEGATE, which may be Calais): the real one first. */
static const char *const default_libs[] = { "libpcsclite_real.so.1", "libpcsclite.so.1", NULL };
#endif

/* The service's API, as function pointers into its library. */
struct svc {
	calais__dl_t lib;
	char *path;
	LONG (*establish)(DWORD, LPCVOID, LPCVOID, LPSCARDCONTEXT);
	LONG (*release)(SCARDCONTEXT);
	LONG (*list)(SCARDCONTEXT, LPCSTR, LPSTR, LPDWORD);
	LONG (*status_change)(SCARDCONTEXT, DWORD, SCARD_READERSTATE *, DWORD);
	LONG (*cancel)(SCARDCONTEXT);
	LONG (*connect)(SCARDCONTEXT, LPCSTR, DWORD, DWORD, LPSCARDHANDLE, LPDWORD);
	LONG (*reconnect)(SCARDHANDLE, DWORD, DWORD, DWORD, LPDWORD);
	LONG (*disconnect)(SCARDHANDLE, DWORD);
	LONG (*begin)(SCARDHANDLE);
	LONG (*end)(SCARDHANDLE, DWORD);
	LONG (*status)(SCARDHANDLE, LPSTR, LPDWORD, LPDWORD, LPDWORD, LPBYTE, LPDWORD);
	LONG (*transmit)(SCARDHANDLE, const SCARD_IO_REQUEST *, LPCBYTE, DWORD, SCARD_IO_REQUEST *,
	                 LPBYTE, LPDWORD);
	LONG (*control)(SCARDHANDLE, DWORD, LPCVOID, DWORD, LPVOID, DWORD, LPDWORD);
	LONG (*get_attrib)(SCARDHANDLE, DWORD, LPBYTE, LPDWORD);
	LONG (*set_attrib)(SCARDHANDLE, DWORD, LPCBYTE, DWORD);
	const char *(*stringify)(LONG); /* pcsc-lite only */
};

/* One service reader as the watcher tracks it. */
struct entry {
	char name[MAX_READERNAME];
	calais_reader *r;   /* NULL once the core closed it */
	DWORD state;        /* the service's last dwEventState */
	bool present;
	uint8_t atr[MAX_ATR_SIZE];
	size_t atr_len;
	bool seen;
};

struct pcsc_priv {
	calais_backend_instance *bi;
	struct svc api;
	bool loaded;
	calais__mutex_t lock; /* everything below; taken before mgr.lock (card events) */
	calais__cond_t cond;
	bool stop;
	bool watcher_done;    /* the watcher left its loop */
	bool first_sync;      /* the watcher's first attempt is over */
	calais__thread_t watcher;
	bool watcher_running;
	SCARDCONTEXT wctx;
	bool wctx_valid;
	bool down_logged, load_logged;
	struct entry *entries[MAX_SVC_READERS];
	size_t n_entries;
	DWORD pnp_state;
};

/* Per reader: its own service context (the service's are per thread of use) and the
 * service connection, both opened on demand. io_lock of the reader guards them. */
struct pcsc_reader {
	struct pcsc_priv *pp;
	struct entry *e;       /* pp->lock */
	char name[MAX_READERNAME];
	SCARDCONTEXT ctx;
	bool ctx_valid;
	SCARDHANDLE h;
	bool connected;
	DWORD share, proto;
	bool in_tx;            /* the service transaction of hold() */
};

/* The service's code mapped to ours: a dead service or stale handle means the reader
 * is unavailable. The original code is logged. */
static LONG map(struct pcsc_reader *pr, LONG rv, const char *what)
{
	switch (rv) {
	case SCARD_S_SUCCESS:
		return rv;
	case SCARD_E_NO_SERVICE:
	case SCARD_E_SERVICE_STOPPED:
	case SCARD_E_INVALID_HANDLE:
	case SCARD_E_UNKNOWN_READER:
	case SCARD_E_READER_UNAVAILABLE:
	case SCARD_E_NO_READERS_AVAILABLE:
		pcsc_log(CALAIS_LOG_INFO, "\"%s\": service %s: 0x%08lX (%s)", pr->name, what,
		         (unsigned long)(DWORD)rv, pcsc_stringify_error(rv));
		/* The connection is dead: the next call starts afresh. */
		pr->connected = false;
		pr->in_tx = false;
		if (pr->ctx_valid)
			pr->pp->api.release(pr->ctx);
		pr->ctx_valid = false;
		return SCARD_E_READER_UNAVAILABLE;
	case SCARD_E_NO_SMARTCARD:
	case SCARD_W_REMOVED_CARD:
		pr->connected = false;
		return rv;
	default:
		pcsc_log(CALAIS_LOG_DEBUG, "\"%s\": service %s: 0x%08lX (%s)", pr->name, what,
		         (unsigned long)(DWORD)rv, pcsc_stringify_error(rv));
		return rv;
	}
}

/* ---- loading ----------------------------------------------------------------------- */

static bool load_path(struct pcsc_priv *pp, const char *path)
{
	struct svc *a = &pp->api;
	calais__dl_t lib = calais__dl_open(path);
	if (!lib) {
		pcsc_log(CALAIS_LOG_DEBUG, "cannot load %s: %s", path, calais__dl_error());
		return false;
	}
#define SYM(field, name)                                                                 \
	(*(void **)&a->field = calais__dl_sym(lib, name))
	bool ok = SYM(establish, "SCardEstablishContext") && SYM(release, "SCardReleaseContext") &&
	          SYM(list, "SCardListReaders" SYM_A) &&
	          SYM(status_change, "SCardGetStatusChange" SYM_A) && SYM(cancel, "SCardCancel") &&
	          SYM(connect, "SCardConnect" SYM_A) && SYM(reconnect, "SCardReconnect") &&
	          SYM(disconnect, "SCardDisconnect") && SYM(begin, "SCardBeginTransaction") &&
	          SYM(end, "SCardEndTransaction") && SYM(status, "SCardStatus" SYM_A) &&
	          SYM(transmit, "SCardTransmit") && SYM(control, "SCardControl") &&
	          SYM(get_attrib, "SCardGetAttrib") && SYM(set_attrib, "SCardSetAttrib");
	SYM(stringify, "pcsc_stringify_error");
#undef SYM
	if (!ok) {
		pcsc_log(CALAIS_LOG_WARNING, "%s lacks PC/SC functions; not used", path);
		calais__dl_close(lib);
		return false;
	}
	/* Never ourselves: the same functions (Calais built as this libpcsclite.so.1), or
	 * another Calais build, which answers our marker code. */
	const char *mark = a->stringify ? a->stringify(CALAIS__SELF_MARK) : NULL;
	if (a->establish == SCardEstablishContext ||
	    (mark && strncmp(mark, "Calais", 6) == 0)) {
		pcsc_log(CALAIS_LOG_WARNING,
		         "%s is Calais itself, not the platform's PC/SC service; passthrough refused "
		         "(set CALAIS_PCSC_LIBRARY to the real library)",
		         path);
		calais__dl_close(lib);
		return false;
	}
	a->lib = lib;
	a->path = strdup(path);
	pcsc_log(CALAIS_LOG_INFO, "using the PC/SC service through %s", path);
	return true;
}

static bool load(struct pcsc_priv *pp)
{
	const char *want = calais__mgr.cfg.pcsc_library;
	if (!want)
		want = calais__getenv("CALAIS_PCSC_LIBRARY");
	if (want && *want)
		return load_path(pp, want);
	for (size_t i = 0; default_libs[i]; i++)
		if (load_path(pp, default_libs[i]))
			return true;
	return false;
}

/* ---- the watcher ------------------------------------------------------------------- */

/* Waits up to ms (or until stop); pp->lock held. */
static void nap(struct pcsc_priv *pp, unsigned ms)
{
	uint64_t until = calais__now_ms() + ms;
	while (!pp->stop && calais__cond_wait_until(&pp->cond, &pp->lock, until))
		;
}

static void drop_entry(struct pcsc_priv *pp, size_t i)
{
	struct entry *e = pp->entries[i];
	if (e->r) {
		struct pcsc_reader *pr = calais_reader_priv(e->r);
		pr->e = NULL;
		calais_reader_remove(e->r);
	}
	free(e);
	pp->entries[i] = pp->entries[--pp->n_entries];
}

/* The service is gone: every reader goes, the context is dropped. pp->lock held. */
static void service_lost(struct pcsc_priv *pp, LONG rv)
{
	pcsc_log(CALAIS_LOG_WARNING, "PC/SC service lost (0x%08lX, %s): its readers are removed",
	         (unsigned long)(DWORD)rv, pcsc_stringify_error(rv));
	while (pp->n_entries)
		drop_entry(pp, pp->n_entries - 1);
	if (pp->wctx_valid)
		pp->api.release(pp->wctx);
	pp->wctx_valid = false;
	pp->pnp_state = 0;
}

static void add_entry(struct pcsc_priv *pp, const char *name)
{
	if (pp->n_entries == MAX_SVC_READERS)
		return;
	struct entry *e = calloc(1, sizeof(*e));
	if (!e)
		return;
	snprintf(e->name, sizeof(e->name), "%s", name);
	e->seen = true;
	struct calais_reader_desc d = {
		.name = name,
		.flags = CALAIS_READER_KEEP_NAME,
		.protocols = SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1 | SCARD_PROTOCOL_RAW,
		.max_input = MAX_BUFFER_SIZE_EXTENDED,
	};
	calais_reader *r;
	if (calais_reader_new(pp->bi, &d, &r) != SCARD_S_SUCCESS) {
		free(e);
		return;
	}
	struct pcsc_reader *pr = calais_reader_priv(r);
	pr->pp = pp;
	pr->e = e;
	snprintf(pr->name, sizeof(pr->name), "%s", name);
	e->r = r;
	pp->entries[pp->n_entries++] = e;
	/* Its state now, so a card already there is listed with the reader. */
	SCARD_READERSTATE rs = { .szReader = e->name, .dwCurrentState = SCARD_STATE_UNAWARE };
	if (pp->api.status_change(pp->wctx, 0, &rs, 1) == SCARD_S_SUCCESS) {
		e->state = rs.dwEventState & ~(DWORD)SCARD_STATE_CHANGED;
		e->present = (e->state & SCARD_STATE_PRESENT) != 0;
		e->atr_len = rs.cbAtr <= MAX_ATR_SIZE ? rs.cbAtr : 0;
		memcpy(e->atr, rs.rgbAtr, e->atr_len);
	}
	if (calais_reader_publish(r, e->present) != SCARD_S_SUCCESS) {
		e->r = NULL;
		drop_entry(pp, pp->n_entries - 1);
	}
}

/* Lists the service's readers and brings ours in step. pp->lock held. */
static LONG sync_readers(struct pcsc_priv *pp)
{
	char buf[MAX_SVC_READERS * MAX_READERNAME];
	DWORD len = sizeof(buf);
	LONG rv = pp->api.list(pp->wctx, NULL, buf, &len);
	if (rv == SCARD_E_NO_READERS_AVAILABLE) {
		len = 0;
		buf[0] = 0;
	} else if (rv != SCARD_S_SUCCESS) {
		return rv;
	}
	if (len > sizeof(buf))
		len = sizeof(buf);
	buf[sizeof(buf) - 1] = 0;
	for (size_t i = 0; i < pp->n_entries; i++)
		pp->entries[i]->seen = false;
	for (const char *p = buf; p < buf + len && *p; p += strlen(p) + 1) {
		bool known = false;
		for (size_t i = 0; i < pp->n_entries && !known; i++)
			if (strcmp(pp->entries[i]->name, p) == 0)
				known = pp->entries[i]->seen = true;
		if (!known)
			add_entry(pp, p);
	}
	for (size_t i = pp->n_entries; i-- > 0;)
		if (!pp->entries[i]->seen)
			drop_entry(pp, i);
	return SCARD_S_SUCCESS;
}

/* A reader's new state from the service: card movement pushed into the core. */
static void apply_state(struct pcsc_priv *pp, struct entry *e, const SCARD_READERSTATE *rs)
{
	DWORD st = rs->dwEventState & ~(DWORD)SCARD_STATE_CHANGED;
	bool present = (st & SCARD_STATE_PRESENT) != 0;
	/* The event counter moved by more than one with a card still there: it was taken
	 * out and put back between two returns. */
	unsigned moved = (unsigned)((st >> 16) - (e->state >> 16)) & 0xFFFFu;
	bool swapped = present && e->present && moved >= 2;
	e->state = st;
	e->atr_len = rs->cbAtr <= MAX_ATR_SIZE ? rs->cbAtr : 0;
	memcpy(e->atr, rs->rgbAtr, e->atr_len);
	if (!e->r)
		return;
	if (swapped || (!present && e->present))
		calais_reader_card_event(e->r, false);
	if (present && (!e->present || swapped))
		calais_reader_card_event(e->r, true);
	e->present = present;
}

static void *watcher_main(void *arg)
{
	struct pcsc_priv *pp = arg;
	unsigned backoff = BACKOFF_MIN_MS;
	calais__mutex_lock(&pp->lock);
	while (!pp->stop) {
		if (!pp->loaded) {
			pp->loaded = load(pp);
			if (!pp->loaded) {
				if (!pp->load_logged)
					pcsc_log(CALAIS_LOG_WARNING,
					         "no PC/SC service library could be loaded; retrying");
				pp->load_logged = true;
				goto retry;
			}
		}
		if (!pp->wctx_valid) {
			LONG rv = pp->api.establish(SCARD_SCOPE_SYSTEM, NULL, NULL, &pp->wctx);
			if (rv != SCARD_S_SUCCESS) {
				if (!pp->down_logged)
					pcsc_log(CALAIS_LOG_WARNING,
					         "PC/SC service not available (0x%08lX, %s); retrying",
					         (unsigned long)(DWORD)rv, pcsc_stringify_error(rv));
				pp->down_logged = true;
				goto retry;
			}
			pp->wctx_valid = true;
			if (pp->down_logged)
				pcsc_log(CALAIS_LOG_INFO, "PC/SC service back");
			pp->down_logged = false;
			backoff = BACKOFF_MIN_MS;
		}
		LONG rv = sync_readers(pp);
		if (rv != SCARD_S_SUCCESS) {
			service_lost(pp, rv);
			continue;
		}
		if (!pp->first_sync) {
			pp->first_sync = true;
			calais__cond_broadcast(&pp->cond);
		}

		/* Wait on the notification reader and every reader, without our lock: the
		 * service's call blocks; SCardCancel() wakes it. */
		SCARD_READERSTATE rs[MAX_SVC_READERS + 1];
		struct entry *es[MAX_SVC_READERS];
		size_t n = 0;
		memset(rs, 0, sizeof(rs));
		rs[0].szReader = "\\\\?PnP?\\Notification";
		rs[0].dwCurrentState = pp->pnp_state;
		for (size_t i = 0; i < pp->n_entries; i++) {
			es[n] = pp->entries[i];
			rs[n + 1].szReader = es[n]->name;
			rs[n + 1].dwCurrentState = es[n]->state;
			n++;
		}
		SCARDCONTEXT wctx = pp->wctx;
		calais__mutex_unlock(&pp->lock);
		rv = pp->api.status_change(wctx, INFINITE, rs, (DWORD)n + 1);
		calais__mutex_lock(&pp->lock);
		if (pp->stop)
			break;
		if (rv == SCARD_S_SUCCESS) {
			pp->pnp_state = rs[0].dwEventState & ~(DWORD)SCARD_STATE_CHANGED;
			/* Entries dropped meanwhile (close) are still allocated: only the watcher
			 * frees them. */
			for (size_t i = 0; i < n; i++)
				apply_state(pp, es[i], &rs[i + 1]);
		} else if (rv == SCARD_E_CANCELLED || rv == SCARD_E_TIMEOUT ||
		           rv == SCARD_E_UNKNOWN_READER) {
			/* a reader went away before the call: the next listing says which */
		} else {
			service_lost(pp, rv);
		}
		continue;
	retry:
		if (!pp->first_sync) {
			pp->first_sync = true;
			calais__cond_broadcast(&pp->cond);
		}
		nap(pp, backoff);
		backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
	}
	pp->watcher_done = true;
	calais__cond_broadcast(&pp->cond);
	calais__mutex_unlock(&pp->lock);
	return NULL;
}

/* ---- the backend table ------------------------------------------------------------- */

static LONG pcsc_init(calais_backend_instance *bi)
{
	struct pcsc_priv *pp = calais_backend_priv(bi);
	pp->bi = bi;
	calais__mutex_init(&pp->lock);
	calais__cond_init(&pp->cond);
	if (calais__thread_create(&pp->watcher, watcher_main, pp) != 0) {
		pcsc_log(CALAIS_LOG_ERROR, "cannot start the watcher thread");
		return SCARD_E_NO_MEMORY;
	}
	pp->watcher_running = true;
	/* A running service answers at once: wait that long, so the readers it has are
	 * listed when start-up returns; a missing one never delays it. */
	calais__mutex_lock(&pp->lock);
	uint64_t until = calais__now_ms() + FIRST_SYNC_MS;
	while (!pp->first_sync && calais__cond_wait_until(&pp->cond, &pp->lock, until))
		;
	calais__mutex_unlock(&pp->lock);
	return SCARD_S_SUCCESS;
}

static void pcsc_stop(calais_backend_instance *bi)
{
	struct pcsc_priv *pp = calais_backend_priv(bi);
	calais__mutex_lock(&pp->lock);
	pp->stop = true;
	calais__cond_broadcast(&pp->cond);
	/* The service's SCardCancel() only wakes a wait in progress: one that starts just
	 * after it would sleep for ever. Cancel again until the watcher is out. */
	while (pp->watcher_running && !pp->watcher_done) {
		if (pp->wctx_valid)
			pp->api.cancel(pp->wctx);
		calais__cond_wait_until(&pp->cond, &pp->lock, calais__now_ms() + 20);
	}
	calais__mutex_unlock(&pp->lock);
	if (pp->watcher_running)
		calais__thread_join(pp->watcher);
	pp->watcher_running = false;
}

static void pcsc_exit(calais_backend_instance *bi)
{
	struct pcsc_priv *pp = calais_backend_priv(bi);
	while (pp->n_entries) {
		pp->entries[pp->n_entries - 1]->r = NULL;
		free(pp->entries[--pp->n_entries]);
	}
	if (pp->wctx_valid)
		pp->api.release(pp->wctx);
	if (pp->api.lib)
		calais__dl_close(pp->api.lib);
	free(pp->api.path);
	calais__cond_destroy(&pp->cond);
	calais__mutex_destroy(&pp->lock);
}

static void pcsc_close(calais_reader *r)
{
	struct pcsc_reader *pr = calais_reader_priv(r);
	struct pcsc_priv *pp = pr->pp;
	calais__mutex_lock(&pp->lock);
	if (pr->e)
		pr->e->r = NULL;
	pr->e = NULL;
	calais__mutex_unlock(&pp->lock);
	if (pr->connected) {
		if (pr->in_tx)
			pp->api.end(pr->h, SCARD_LEAVE_CARD);
		pp->api.disconnect(pr->h, SCARD_LEAVE_CARD);
	}
	if (pr->ctx_valid)
		pp->api.release(pr->ctx);
	pr->connected = pr->ctx_valid = false;
}

/* Opens (or re-opens with another protocol) the service connection. share: SHARED for
 * card work, DIRECT for control and attributes without a card. */
static LONG ensure(struct pcsc_reader *pr, DWORD share, DWORD proto)
{
	struct svc *a = &pr->pp->api;
	LONG rv;
	if (!pr->ctx_valid) {
		rv = a->establish(SCARD_SCOPE_SYSTEM, NULL, NULL, &pr->ctx);
		if (rv != SCARD_S_SUCCESS)
			return map(pr, rv, "context");
		pr->ctx_valid = true;
	}
	if (pr->connected && (share == SCARD_SHARE_DIRECT || pr->share == share) &&
	    (!proto || proto == pr->proto))
		return SCARD_S_SUCCESS;
	DWORD active = 0;
	DWORD want = proto ? proto : SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1;
	if (share == SCARD_SHARE_DIRECT)
		want = 0;
	if (pr->connected)
		rv = a->reconnect(pr->h, share, want, SCARD_LEAVE_CARD, &active);
	else
		rv = a->connect(pr->ctx, pr->name, share, want, &pr->h, &active);
	if (rv != SCARD_S_SUCCESS)
		return map(pr, rv, pr->connected ? "reconnect" : "connect");
	pr->connected = true;
	pr->share = share;
	pr->proto = active;
	return SCARD_S_SUCCESS;
}

static LONG pcsc_power_on(calais_reader *r, bool warm, uint8_t *atr, size_t *atr_len)
{
	struct pcsc_reader *pr = calais_reader_priv(r);
	struct pcsc_priv *pp = pr->pp;
	if (warm) {
		/* A reset at the service, seen by its other clients as such. */
		LONG rv = ensure(pr, SCARD_SHARE_SHARED, 0);
		DWORD active;
		if (rv == SCARD_S_SUCCESS)
			rv = map(pr, pp->api.reconnect(pr->h, SCARD_SHARE_SHARED, pr->proto,
			                               SCARD_RESET_CARD, &active),
			         "reset");
		if (rv != SCARD_S_SUCCESS)
			return rv;
		char name[MAX_READERNAME];
		DWORD nl = sizeof(name), state, proto, al = MAX_ATR_SIZE;
		rv = map(pr, pp->api.status(pr->h, name, &nl, &state, &proto, atr, &al), "status");
		if (rv == SCARD_S_SUCCESS)
			*atr_len = al;
		return rv;
	}
	/* The service powered the card when it was inserted: its ATR is the answer. */
	calais__mutex_lock(&pp->lock);
	LONG rv = SCARD_E_NO_SMARTCARD;
	if (pr->e && pr->e->present) {
		if (pr->e->state & SCARD_STATE_MUTE || pr->e->atr_len == 0) {
			rv = SCARD_W_UNRESPONSIVE_CARD;
		} else {
			memcpy(atr, pr->e->atr, pr->e->atr_len);
			*atr_len = pr->e->atr_len;
			rv = SCARD_S_SUCCESS;
		}
	} else if (!pr->e) {
		rv = SCARD_E_READER_UNAVAILABLE;
	}
	calais__mutex_unlock(&pp->lock);
	return rv;
}

/* Our idle power-down: the service keeps power as it sees fit; we only let go of our
 * connection, so other processes are not kept from an exclusive one. */
static LONG pcsc_power_off(calais_reader *r)
{
	struct pcsc_reader *pr = calais_reader_priv(r);
	if (pr->connected && !pr->in_tx) {
		pr->pp->api.disconnect(pr->h, SCARD_LEAVE_CARD);
		pr->connected = false;
	}
	return SCARD_S_SUCCESS;
}

static LONG pcsc_set_protocol(calais_reader *r, uint32_t protocol)
{
	struct pcsc_reader *pr = calais_reader_priv(r);
	return ensure(pr, SCARD_SHARE_SHARED, protocol);
}

static LONG pcsc_transmit(calais_reader *r, uint32_t protocol, const uint8_t *tx, size_t tx_len,
                          uint8_t *rx, size_t *rx_len, uint32_t timeout_ms)
{
	struct pcsc_reader *pr = calais_reader_priv(r);
	LONG rv = ensure(pr, SCARD_SHARE_SHARED, protocol);
	if (rv != SCARD_S_SUCCESS)
		return rv;
	SCARD_IO_REQUEST pci = { protocol, sizeof(SCARD_IO_REQUEST) };
	DWORD len = *rx_len > MAX_BUFFER_SIZE_EXTENDED ? MAX_BUFFER_SIZE_EXTENDED : (DWORD)*rx_len;
	rv = pr->pp->api.transmit(pr->h, &pci, tx, (DWORD)tx_len, NULL, rx, &len);
	if (rv == SCARD_W_RESET_CARD) {
		/* Another process reset the card: acknowledged at the service, reported. */
		DWORD active;
		pr->pp->api.reconnect(pr->h, SCARD_SHARE_SHARED, pr->proto, SCARD_LEAVE_CARD, &active);
		pcsc_log(CALAIS_LOG_INFO, "\"%s\": card reset by another application", pr->name);
		return SCARD_W_RESET_CARD;
	}
	if (rv == SCARD_S_SUCCESS || rv == SCARD_E_INSUFFICIENT_BUFFER)
		*rx_len = len;
	return map(pr, rv, "transmit");
}

/* Control and attributes work without a card: a direct connection then. */
static LONG any_connection(struct pcsc_reader *pr)
{
	if (pr->connected)
		return SCARD_S_SUCCESS;
	LONG rv = ensure(pr, SCARD_SHARE_SHARED, 0);
	if (rv == SCARD_E_NO_SMARTCARD || rv == SCARD_W_REMOVED_CARD ||
	    rv == SCARD_W_UNRESPONSIVE_CARD || rv == SCARD_E_SHARING_VIOLATION)
		rv = ensure(pr, SCARD_SHARE_DIRECT, 0);
	return rv;
}

static LONG pcsc_control(calais_reader *r, uint32_t code, const uint8_t *in, size_t in_len,
                         uint8_t *out, size_t out_cap, size_t *out_len)
{
	struct pcsc_reader *pr = calais_reader_priv(r);
	LONG rv = any_connection(pr);
	if (rv != SCARD_S_SUCCESS)
		return rv;
	DWORD got = 0;
	DWORD cap = out_cap > MAX_BUFFER_SIZE_EXTENDED ? MAX_BUFFER_SIZE_EXTENDED : (DWORD)out_cap;
	rv = pr->pp->api.control(pr->h, code, in, (DWORD)in_len, out, cap, &got);
	*out_len = got;
	return map(pr, rv, "control");
}

static LONG pcsc_get_attrib(calais_reader *r, uint32_t id, uint8_t *buf, size_t *len)
{
	struct pcsc_reader *pr = calais_reader_priv(r);
	LONG rv = any_connection(pr);
	if (rv != SCARD_S_SUCCESS)
		return rv;
	/* pcsc-lite refuses a buffer larger than MAX_BUFFER_SIZE outright. */
	DWORD l = *len > MAX_BUFFER_SIZE ? MAX_BUFFER_SIZE : (DWORD)*len;
	rv = pr->pp->api.get_attrib(pr->h, id, buf, &l);
	if (rv == SCARD_S_SUCCESS || rv == SCARD_E_INSUFFICIENT_BUFFER)
		*len = l;
	return map(pr, rv, "get attribute");
}

static LONG pcsc_set_attrib(calais_reader *r, uint32_t id, const uint8_t *buf, size_t len)
{
	struct pcsc_reader *pr = calais_reader_priv(r);
	LONG rv = any_connection(pr);
	return rv != SCARD_S_SUCCESS
	               ? rv
	               : map(pr, pr->pp->api.set_attrib(pr->h, id, buf, (DWORD)len), "set attribute");
}

/* The application's transaction or exclusive connection: a transaction at the service,
 * for exactly as long. */
static LONG pcsc_hold(calais_reader *r, bool held)
{
	struct pcsc_reader *pr = calais_reader_priv(r);
	if (!held) {
		LONG rv = SCARD_S_SUCCESS;
		if (pr->in_tx && pr->connected)
			rv = map(pr, pr->pp->api.end(pr->h, SCARD_LEAVE_CARD), "end transaction");
		pr->in_tx = false;
		return rv;
	}
	LONG rv = any_connection(pr);
	if (rv == SCARD_S_SUCCESS && !pr->in_tx) {
		rv = map(pr, pr->pp->api.begin(pr->h), "begin transaction");
		pr->in_tx = rv == SCARD_S_SUCCESS;
	}
	return rv;
}

const struct calais_backend calais__backend_pcsc = {
	.abi_version = CALAIS_BACKEND_ABI_VERSION,
	.name = "pcsc",
	.caps = CALAIS_BACKEND_CAP_HOTPLUG | CALAIS_BACKEND_CAP_CARD_EVENTS |
	        CALAIS_BACKEND_CAP_EXTENDED,
	.instance_priv_size = sizeof(struct pcsc_priv),
	.reader_priv_size = sizeof(struct pcsc_reader),
	.init = pcsc_init,
	.stop = pcsc_stop,
	.exit = pcsc_exit,
	.close = pcsc_close,
	.power_on = pcsc_power_on,
	.power_off = pcsc_power_off,
	.set_protocol = pcsc_set_protocol,
	.transmit = pcsc_transmit,
	.control = pcsc_control,
	.get_attrib = pcsc_get_attrib,
	.set_attrib = pcsc_set_attrib,
	.hold = pcsc_hold,
};
