/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The PC/SC passthrough backend: the platform's own PC/SC service (pcscd, the macOS
 * framework, SCardSvr) as a transport. Its library is loaded at run time and reached only
 * through function pointers, so its SCard* never meet ours. One watcher thread sits in
 * the service's SCardGetStatusChange (readers and `\\?PnP?\Notification`) and pushes
 * arrivals, removals and card movement into the core; card operations are forwarded on a
 * service connection opened shared, held exclusively only for the application's
 * transactions and exclusive connections.
 *
 * Bounds. A call into the service cannot be interrupted from outside. In pcsc-lite
 * (read in its client, winscard_clnt.c and winscard_msg.c, and measured with pcscd
 * 1.9.9 and vpcd): SCardCancel() ends only an SCardGetStatusChange() of that context
 * and returns success doing nothing otherwise; SCardTransmit() and SCardControl() hold
 * their context's lock and wait for pcscd's answer with no timeout, so SCardDisconnect()
 * or SCardReleaseContext() of that context wait behind them, and another context's
 * SCardConnect() on the same reader waits in pcscd behind the reader's lock; a card
 * whose vpcd connection closes ends the exchange at once (pcscd answers success with an
 * empty response); pcscd dying ends it at once with SCARD_F_COMM_ERROR or
 * SCARD_W_SECURITY_VIOLATION (its socket closed or reset). pcsc-lite's
 * SCardBeginTransaction() and SCardTransmit() also wait, polling every 100 ms, for as long
 * as another process holds a transaction. So every call on a reader's connection runs on
 * a thread of its own (struct call), and the reader's caller waits for it, for cancel()
 * or for the exchange limit (transmit's timeout_ms): on cancel or the limit the caller
 * returns at once (within a wake-up) and the call is left to finish in the service,
 * owning the connection it was lent, which it closes then; the reader opens a new one
 * next time (which pcscd may make wait until the old exchange is over: that bound is the
 * service's, and cancel() ends that wait too). At shutdown calls still in the service
 * get 1 s (ORPHAN_WAIT_MS), then are left running, with the library loaded. The watcher
 * never waits on a reader's call: it has a context of its own, and each reader another.
 * What stays the service's: a cold power-up reads the ATR the watcher got from the
 * service, under the watcher's lock, which the watcher holds across its listing calls,
 * so a hung (not dead) service delays it; close() disconnects inline. */
#include "calais-internal.h"
#include "platform/dl.h"
#include "pcsc-int.h"

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
	struct calls *cs;     /* the service's functions and the calls: see struct calls */
};

/* What a call needs that may outlive the backend: the service's functions, and the lock
 * and list of the calls in progress or left running (cancel, exchange limit). Allocated
 * at init, freed at exit, unless calls still run in the service then: it stays, with the
 * library loaded, for them. Its lock is never held across a service call, so cancel()
 * never waits for the watcher or a service call; lock order: pcsc_priv.lock, then this
 * one (never the other way). */
struct calls {
	struct svc api;
	calais__mutex_t lock;
	calais__cond_t cond;   /* an orphan finished */
	struct call *orphans;  /* lock */
	bool left_behind;      /* lock: exit gave up waiting for the orphans */
	struct calls *next_left; /* left_behind: the chain of them (shutdown's thread) */
};

/* The calls blocks exit had to leave to their orphans, kept reachable: they are the
 * process's from then on. Written by exit only, which the core never runs twice at a
 * time. */
static struct calls *left_to_the_process;

/* A reader's connection at the service: its own context (pcsc-lite serialises the calls
 * of one context) and the card handle, both opened on demand. */
struct conn {
	SCARDCONTEXT ctx;
	bool ctx_valid;
	SCARDHANDLE h;
	bool connected;
	DWORD share, proto;
	bool in_tx;            /* the service transaction of hold() */
};

/* Per reader. The reader's I/O lock guards c, lent whole to the call in progress. */
struct pcsc_reader {
	struct pcsc_priv *pp;
	struct entry *e;       /* pp->lock */
	char name[MAX_READERNAME];
	struct conn c;
	struct call *call;     /* cs->lock: the call in progress */
	bool cancelled;        /* cs->lock */
};

enum op { OP_TRANSMIT, OP_CONTROL, OP_GET_ATTRIB, OP_SET_ATTRIB, OP_RESET, OP_PROTOCOL,
	  OP_HOLD, OP_UNHOLD, OP_POWER_OFF };

/* One call into the service on a reader's connection, run by its own thread. It owns
 * copies of its input and room for its output, so a caller that walks away (cancel)
 * leaves it nothing of its own. done, abandoned and finished: cs->lock. */
struct call {
	struct calls *cs;
	struct conn c;
	enum op op;
	uint32_t protocol, code;
	const uint8_t *in;
	size_t in_len;
	uint8_t *out;
	size_t out_cap, out_len;
	LONG rv;
	calais__thread_t th;
	calais__cond_t cond;   /* done, or the caller's cancel */
	bool done;             /* the service returned */
	bool abandoned;        /* the caller left: the call closes its connection */
	bool finished;         /* an abandoned call's thread is over: join it */
	struct call *next;     /* cs->orphans */
	char name[MAX_READERNAME];
	uint8_t buf[];         /* in_len bytes of input, then out_cap of output */
};

/* The service's code mapped to ours: a dead service or stale handle means the reader
 * is unavailable. The original code is logged. */
static LONG map(struct call *k, LONG rv, const char *what)
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
		pcsc_log(CALAIS_LOG_INFO, "\"%s\": service %s: 0x%08lX (%s)", k->name, what,
		         (unsigned long)(DWORD)rv, pcsc_stringify_error(rv));
		/* The connection is dead: the next call starts afresh. */
		k->c.connected = false;
		k->c.in_tx = false;
		if (k->c.ctx_valid)
			k->cs->api.release(k->c.ctx);
		k->c.ctx_valid = false;
		return SCARD_E_READER_UNAVAILABLE;
	case SCARD_E_NO_SMARTCARD:
	case SCARD_W_REMOVED_CARD:
		k->c.connected = false;
		return rv;
	default:
		pcsc_log(CALAIS_LOG_DEBUG, "\"%s\": service %s: 0x%08lX (%s)", k->name, what,
		         (unsigned long)(DWORD)rv, pcsc_stringify_error(rv));
		return rv;
	}
}

/* ---- loading ----------------------------------------------------------------------- */

static bool load_path(struct pcsc_priv *pp, const char *path)
{
	struct svc *a = &pp->cs->api;
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
		pp->cs->api.release(pp->wctx);
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
	if (pp->cs->api.status_change(pp->wctx, 0, &rs, 1) == SCARD_S_SUCCESS) {
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

size_t calais__pcsc_names(const char *buf, size_t len, const char **names, size_t max)
{
	size_t n = 0;
	const char *p = buf, *end = buf + len;
	while (p < end && *p) {
		const char *nul = memchr(p, 0, (size_t)(end - p));
		if (!nul) {
			pcsc_log(CALAIS_LOG_WARNING, "the service's reader list ends inside a name "
			         "(%zu bytes); that name is ignored", (size_t)(end - p));
			break;
		}
		size_t l = (size_t)(nul - p);
		bool dup = false;
		for (size_t i = 0; i < n && !dup; i++)
			dup = strcmp(names[i], p) == 0;
		if (l >= MAX_READERNAME)
			/* It could not be stored whole, so it would never be found again: a
			 * reader removed and added at each listing. */
			pcsc_log(CALAIS_LOG_WARNING, "a service reader name of %zu bytes (%d at most) "
			         "is ignored", l, MAX_READERNAME - 1);
		else if (dup)
			pcsc_log(CALAIS_LOG_WARNING, "the service lists a reader name twice; once "
			         "is kept");
		else if (n == max) {
			pcsc_log(CALAIS_LOG_WARNING, "the service lists more than %zu readers; the "
			         "rest are ignored", max);
			break;
		} else
			names[n++] = p;
		p = nul + 1;
	}
	return n;
}

/* Lists the service's readers and brings ours in step. pp->lock held. */
static LONG sync_readers(struct pcsc_priv *pp)
{
	char buf[MAX_SVC_READERS * MAX_READERNAME];
	DWORD len = sizeof(buf);
	LONG rv = pp->cs->api.list(pp->wctx, NULL, buf, &len);
	if (rv == SCARD_E_NO_READERS_AVAILABLE) {
		len = 0;
		buf[0] = 0;
	} else if (rv != SCARD_S_SUCCESS) {
		return rv;
	}
	if (len > sizeof(buf))
		len = sizeof(buf);
	const char *names[MAX_SVC_READERS];
	size_t n = calais__pcsc_names(buf, len, names, MAX_SVC_READERS);
	for (size_t i = 0; i < pp->n_entries; i++)
		pp->entries[i]->seen = false;
	for (size_t k = 0; k < n; k++) {
		bool known = false;
		for (size_t i = 0; i < pp->n_entries && !known; i++)
			if (strcmp(pp->entries[i]->name, names[k]) == 0)
				known = pp->entries[i]->seen = true;
		if (!known)
			add_entry(pp, names[k]);
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
			LONG rv = pp->cs->api.establish(SCARD_SCOPE_SYSTEM, NULL, NULL, &pp->wctx);
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
		rv = pp->cs->api.status_change(wctx, INFINITE, rs, (DWORD)n + 1);
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

/* ---- calls into the service on a reader's connection -------------------------------- */

/* Closes a connection: the service's transaction ends with it. */
static void conn_close(const struct svc *a, struct conn *c)
{
	if (c->connected) {
		if (c->in_tx)
			a->end(c->h, SCARD_LEAVE_CARD);
		a->disconnect(c->h, SCARD_LEAVE_CARD);
	}
	if (c->ctx_valid)
		a->release(c->ctx);
	memset(c, 0, sizeof(*c));
}

/* Opens (or re-opens with another protocol) the service connection. share: SHARED for
 * card work, DIRECT for control and attributes without a card. */
static LONG ensure(struct call *k, DWORD share, DWORD proto)
{
	struct svc *a = &k->cs->api;
	struct conn *c = &k->c;
	LONG rv;
	if (!c->ctx_valid) {
		rv = a->establish(SCARD_SCOPE_SYSTEM, NULL, NULL, &c->ctx);
		if (rv != SCARD_S_SUCCESS)
			return map(k, rv, "context");
		c->ctx_valid = true;
	}
	if (c->connected && (share == SCARD_SHARE_DIRECT || c->share == share) &&
	    (!proto || proto == c->proto))
		return SCARD_S_SUCCESS;
	DWORD active = 0;
	DWORD want = proto ? proto : SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1;
	if (share == SCARD_SHARE_DIRECT)
		want = 0;
	if (c->connected)
		rv = a->reconnect(c->h, share, want, SCARD_LEAVE_CARD, &active);
	else
		rv = a->connect(c->ctx, k->name, share, want, &c->h, &active);
	if (rv != SCARD_S_SUCCESS)
		return map(k, rv, c->connected ? "reconnect" : "connect");
	c->connected = true;
	c->share = share;
	c->proto = active;
	return SCARD_S_SUCCESS;
}

/* Control and attributes work without a card: a direct connection then. */
static LONG any_connection(struct call *k)
{
	if (k->c.connected)
		return SCARD_S_SUCCESS;
	LONG rv = ensure(k, SCARD_SHARE_SHARED, 0);
	if (rv == SCARD_E_NO_SMARTCARD || rv == SCARD_W_REMOVED_CARD ||
	    rv == SCARD_W_UNRESPONSIVE_CARD || rv == SCARD_E_SHARING_VIOLATION)
		rv = ensure(k, SCARD_SHARE_DIRECT, 0);
	return rv;
}

/* pcscd answers success with an empty response when a vpcd card's connection closes in
 * the middle of an exchange (measured): no APDU answer is shorter than SW1 SW2. The
 * service's own view of the card says whether it is gone (with pcscd 1.9.9 and vpcd it
 * is, at once: measured), else it is a communication error. */
static LONG empty_answer(struct call *k)
{
	char name[MAX_READERNAME];
	DWORD nl = sizeof(name), state = 0, proto, al = MAX_ATR_SIZE;
	uint8_t atr[MAX_ATR_SIZE];
	LONG rv = k->cs->api.status(k->c.h, name, &nl, &state, &proto, atr, &al);
	if (rv == SCARD_W_REMOVED_CARD || rv == SCARD_E_NO_SMARTCARD ||
	    (rv == SCARD_S_SUCCESS && !(state & SCARD_PRESENT)))
		return SCARD_W_REMOVED_CARD;
	pcsc_log(CALAIS_LOG_WARNING, "\"%s\": the service returned an empty answer", k->name);
	return SCARD_F_COMM_ERROR;
}

/* pcsc-lite answers SCARD_F_COMM_ERROR (pcscd's end closed) or SCARD_W_SECURITY_VIOLATION
 * (reset) when its socket to pcscd breaks in the middle of a call (pcscd died: both
 * measured), and the first also for a driver's communication error. A fresh context says
 * which: the service gone makes the reader unavailable (map()). */
static LONG lost_service(struct call *k, LONG rv)
{
	if (rv != SCARD_F_COMM_ERROR && rv != SCARD_W_SECURITY_VIOLATION)
		return rv;
	SCARDCONTEXT c;
	/* A dying pcscd may still take the connection and reset it: any failure to reach
	 * the service is its loss. */
	if (k->cs->api.establish(SCARD_SCOPE_SYSTEM, NULL, NULL, &c) != SCARD_S_SUCCESS)
		return SCARD_E_NO_SERVICE;
	k->cs->api.release(c);
	return rv;
}

static LONG op_transmit(struct call *k)
{
	struct svc *a = &k->cs->api;
	LONG rv = ensure(k, SCARD_SHARE_SHARED, k->protocol);
	if (rv != SCARD_S_SUCCESS)
		return rv;
	SCARD_IO_REQUEST pci = { k->protocol, sizeof(SCARD_IO_REQUEST) };
	DWORD len = (DWORD)k->out_cap;
	rv = a->transmit(k->c.h, &pci, k->in, (DWORD)k->in_len, NULL, k->out, &len);
	if (rv == SCARD_W_RESET_CARD) {
		/* Another process reset the card: acknowledged at the service, reported. */
		DWORD active;
		a->reconnect(k->c.h, SCARD_SHARE_SHARED, k->c.proto, SCARD_LEAVE_CARD, &active);
		pcsc_log(CALAIS_LOG_INFO, "\"%s\": card reset by another application", k->name);
		return SCARD_W_RESET_CARD;
	}
	if (rv == SCARD_S_SUCCESS || rv == SCARD_E_INSUFFICIENT_BUFFER)
		k->out_len = len;
	if (rv == SCARD_S_SUCCESS && len < 2 && k->protocol != SCARD_PROTOCOL_RAW)
		rv = empty_answer(k);
	return map(k, lost_service(k, rv), "transmit");
}

/* One call's work, on its thread. */
static LONG run_op(struct call *k)
{
	struct svc *a = &k->cs->api;
	struct conn *c = &k->c;
	LONG rv;
	DWORD got, active;
	switch (k->op) {
	case OP_TRANSMIT:
		return op_transmit(k);
	case OP_CONTROL:
		rv = any_connection(k);
		if (rv != SCARD_S_SUCCESS)
			return rv;
		got = 0;
		rv = a->control(c->h, k->code, k->in, (DWORD)k->in_len, k->out, (DWORD)k->out_cap,
		                &got);
		k->out_len = got;
		return map(k, lost_service(k, rv), "control");
	case OP_GET_ATTRIB:
		rv = any_connection(k);
		if (rv != SCARD_S_SUCCESS)
			return rv;
		got = (DWORD)k->out_cap;
		rv = a->get_attrib(c->h, k->code, k->out, &got);
		if (rv == SCARD_S_SUCCESS || rv == SCARD_E_INSUFFICIENT_BUFFER)
			k->out_len = got;
		return map(k, rv, "get attribute");
	case OP_SET_ATTRIB:
		rv = any_connection(k);
		return rv != SCARD_S_SUCCESS
		               ? rv
		               : map(k, a->set_attrib(c->h, k->code, k->in, (DWORD)k->in_len),
		                     "set attribute");
	case OP_RESET: {
		/* A reset at the service, seen by its other clients as such. */
		rv = ensure(k, SCARD_SHARE_SHARED, 0);
		if (rv == SCARD_S_SUCCESS)
			rv = map(k, a->reconnect(c->h, SCARD_SHARE_SHARED, c->proto,
			                         SCARD_RESET_CARD, &active),
			         "reset");
		if (rv != SCARD_S_SUCCESS)
			return rv;
		char name[MAX_READERNAME];
		DWORD nl = sizeof(name), state, proto, al = (DWORD)k->out_cap;
		rv = map(k, a->status(c->h, name, &nl, &state, &proto, k->out, &al), "status");
		if (rv == SCARD_S_SUCCESS)
			k->out_len = al;
		return rv;
	}
	case OP_PROTOCOL:
		return ensure(k, SCARD_SHARE_SHARED, k->protocol);
	case OP_HOLD:
		rv = any_connection(k);
		if (rv == SCARD_S_SUCCESS && !c->in_tx) {
			rv = map(k, a->begin(c->h), "begin transaction");
			c->in_tx = rv == SCARD_S_SUCCESS;
		}
		return rv;
	case OP_UNHOLD:
		rv = SCARD_S_SUCCESS;
		if (c->in_tx && c->connected)
			rv = map(k, a->end(c->h, SCARD_LEAVE_CARD), "end transaction");
		c->in_tx = false;
		return rv;
	case OP_POWER_OFF:
		/* Our idle power-down: the service keeps power as it sees fit; we only let go
		 * of our connection, so other processes are not kept from an exclusive one. */
		if (c->connected && !c->in_tx) {
			a->disconnect(c->h, SCARD_LEAVE_CARD);
			c->connected = false;
		}
		return SCARD_S_SUCCESS;
	}
	return SCARD_F_INTERNAL_ERROR;
}

static void *call_main(void *arg)
{
	struct call *k = arg;
	struct calls *cs = k->cs;
	LONG rv = run_op(k);
	calais__mutex_lock(&cs->lock);
	k->rv = rv;
	k->done = true;
	bool orphan = k->abandoned;
	calais__cond_signal(&k->cond);
	calais__mutex_unlock(&cs->lock);
	/* Not abandoned: the caller owns k from here and joins this thread. */
	if (!orphan)
		return NULL;
	pcsc_log(CALAIS_LOG_DEBUG, "\"%s\": a call left running returned: 0x%08lX", k->name,
	         (unsigned long)(DWORD)rv);
	conn_close(&cs->api, &k->c);
	calais__mutex_lock(&cs->lock);
	bool behind = cs->left_behind;
	if (behind) {
		/* Exit gave up on us: nobody joins this thread or reads k any more. */
		for (struct call **p = &cs->orphans; *p; p = &(*p)->next)
			if (*p == k) {
				*p = k->next;
				break;
			}
	} else {
		k->finished = true;
		calais__cond_broadcast(&cs->cond);
	}
	calais__mutex_unlock(&cs->lock);
	if (behind) {
		calais__thread_detach(k->th);
		calais__cond_destroy(&k->cond);
		free(k);
	}
	return NULL;
}

/* Joins and frees the abandoned calls that are over, waiting up to wait_ms for the
 * others. Returns how many still run. */
static unsigned reap_orphans(struct calls *cs, unsigned wait_ms)
{
	uint64_t until = calais__now_ms() + wait_ms;
	unsigned running;
	calais__mutex_lock(&cs->lock);
	for (;;) {
		struct call *over = NULL;
		running = 0;
		for (struct call **p = &cs->orphans; *p;) {
			struct call *k = *p;
			if (k->finished) {
				*p = k->next;
				k->next = over;
				over = k;
			} else {
				running++;
				p = &k->next;
			}
		}
		calais__mutex_unlock(&cs->lock);
		while (over) {
			struct call *k = over;
			over = k->next;
			calais__thread_join(k->th);
			calais__cond_destroy(&k->cond);
			free(k);
		}
		calais__mutex_lock(&cs->lock);
		if (!running || !wait_ms || !calais__cond_wait_until(&cs->cond, &cs->lock, until))
			break;
	}
	calais__mutex_unlock(&cs->lock);
	return running;
}

static struct call *call_new(struct pcsc_reader *pr, enum op op, const void *in, size_t in_len,
                             size_t out_cap)
{
	struct call *k = malloc(sizeof(*k) + in_len + out_cap);
	if (!k)
		return NULL;
	memset(k, 0, sizeof(*k));
	k->cs = pr->pp->cs;
	k->op = op;
	if (in_len)
		memcpy(k->buf, in, in_len);
	k->in = k->buf;
	k->in_len = in_len;
	k->out = k->buf + in_len;
	k->out_cap = out_cap;
	snprintf(k->name, sizeof(k->name), "%s", pr->name);
	return k;
}

/* Runs k on its own thread with the reader's connection, and waits for it, for cancel()
 * or for timeout_ms (0: no limit of ours). Returns the call's code, with k still the
 * caller's to read and free, or SCARD_E_CANCELLED / SCARD_E_TIMEOUT with k left running
 * (it is the orphan list's then) and *left set. Reader's I/O lock held. */
static LONG call_run(struct pcsc_reader *pr, struct call *k, uint32_t timeout_ms, bool *left)
{
	struct calls *cs = k->cs;
	*left = false;
	reap_orphans(cs, 0);
	k->c = pr->c;
	calais__cond_init(&k->cond);
	calais__mutex_lock(&cs->lock);
	/* A cancel that came after the last call returned was meant for that one. */
	pr->cancelled = false;
	pr->call = k;
	calais__mutex_unlock(&cs->lock);
	if (calais__thread_create(&k->th, call_main, k) != 0) {
		/* No thread to spare: the call runs here, out of cancel's reach. */
		LONG rv = run_op(k);
		calais__mutex_lock(&cs->lock);
		pr->call = NULL;
		calais__mutex_unlock(&cs->lock);
		calais__cond_destroy(&k->cond);
		pr->c = k->c;
		return rv;
	}
	uint64_t deadline = timeout_ms ? calais__now_ms() + timeout_ms : 0;
	LONG why = SCARD_S_SUCCESS;
	calais__mutex_lock(&cs->lock);
	while (!k->done) {
		if (pr->cancelled) {
			why = SCARD_E_CANCELLED;
			break;
		}
		if (!deadline) {
			calais__cond_wait(&k->cond, &cs->lock);
		} else if (!calais__cond_wait_until(&k->cond, &cs->lock, deadline) && !k->done) {
			why = SCARD_E_TIMEOUT;
			break;
		}
	}
	pr->call = NULL;
	if (!k->done) {
		/* The service call goes on; its connection goes with it and is closed when it
		 * returns. The reader opens a new one at its next call. */
		k->abandoned = true;
		k->next = cs->orphans;
		cs->orphans = k;
		calais__mutex_unlock(&cs->lock);
		memset(&pr->c, 0, sizeof(pr->c));
		pcsc_log(CALAIS_LOG_INFO, "\"%s\": %s; the service's call is left to end by itself",
		         pr->name, why == SCARD_E_TIMEOUT ? "exchange limit reached" : "cancelled");
		*left = true;
		return why;
	}
	LONG rv = k->rv;
	calais__mutex_unlock(&cs->lock);
	calais__thread_join(k->th);
	calais__cond_destroy(&k->cond);
	pr->c = k->c;
	return rv;
}

/* A call with no output beyond its code. */
static LONG call_simple(struct pcsc_reader *pr, enum op op, uint32_t protocol, uint32_t code,
                        const uint8_t *in, size_t in_len)
{
	struct call *k = call_new(pr, op, in, in_len, 0);
	if (!k)
		return SCARD_E_NO_MEMORY;
	k->protocol = protocol;
	k->code = code;
	bool left;
	LONG rv = call_run(pr, k, 0, &left);
	if (!left)
		free(k);
	return rv;
}

/* ---- the backend table ------------------------------------------------------------- */

static LONG pcsc_init(calais_backend_instance *bi)
{
	struct pcsc_priv *pp = calais_backend_priv(bi);
	pp->bi = bi;
	calais__mutex_init(&pp->lock);
	calais__cond_init(&pp->cond);
	pp->cs = calloc(1, sizeof(*pp->cs));
	if (!pp->cs)
		return SCARD_E_NO_MEMORY;
	calais__mutex_init(&pp->cs->lock);
	calais__cond_init(&pp->cs->cond);
	if (calais__thread_create(&pp->watcher, watcher_main, pp) != 0) {
		pcsc_log(CALAIS_LOG_ERROR, "cannot start the watcher thread");
		calais__cond_destroy(&pp->cs->cond);
		calais__mutex_destroy(&pp->cs->lock);
		free(pp->cs);
		pp->cs = NULL;
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
			pp->cs->api.cancel(pp->wctx);
		calais__cond_wait_until(&pp->cond, &pp->lock, calais__now_ms() + 20);
	}
	calais__mutex_unlock(&pp->lock);
	if (pp->watcher_running)
		calais__thread_join(pp->watcher);
	pp->watcher_running = false;
}

/* How long shutdown waits for calls left running in the service (cancelled exchanges
 * whose card never answered) before leaving them, and the library, behind. */
#define ORPHAN_WAIT_MS 1000u

static void pcsc_exit(calais_backend_instance *bi)
{
	struct pcsc_priv *pp = calais_backend_priv(bi);
	struct calls *cs = pp->cs;
	if (!cs)
		return; /* init failed */
	while (pp->n_entries) {
		pp->entries[pp->n_entries - 1]->r = NULL;
		free(pp->entries[--pp->n_entries]);
	}
	if (pp->wctx_valid)
		cs->api.release(pp->wctx);
	calais__cond_destroy(&pp->cond);
	calais__mutex_destroy(&pp->lock);
	reap_orphans(cs, ORPHAN_WAIT_MS);
	/* From here an orphan that ends frees itself; those that ended meanwhile are joined
	 * now. One that leaves the list under the lock never touches cs or the library
	 * again. */
	calais__mutex_lock(&cs->lock);
	cs->left_behind = true;
	calais__mutex_unlock(&cs->lock);
	reap_orphans(cs, 0);
	calais__mutex_lock(&cs->lock);
	unsigned left = 0;
	for (struct call *k = cs->orphans; k; k = k->next)
		left++;
	calais__mutex_unlock(&cs->lock);
	if (left) {
		/* Their threads are still inside the service's library: it stays loaded, and
		 * cs with it; each frees its own call and detaches itself when the service
		 * returns. */
		pcsc_log(CALAIS_LOG_WARNING,
		         "%u call%s still in the PC/SC service at shutdown; left running", left,
		         left == 1 ? "" : "s");
		cs->next_left = left_to_the_process;
		left_to_the_process = cs;
		return;
	}
	if (cs->api.lib)
		calais__dl_close(cs->api.lib);
	free(cs->api.path);
	calais__cond_destroy(&cs->cond);
	calais__mutex_destroy(&cs->lock);
	free(cs);
}

/* Inline: nothing cancels a close, and the core calls it after the reader's last call. */
static void pcsc_close(calais_reader *r)
{
	struct pcsc_reader *pr = calais_reader_priv(r);
	struct pcsc_priv *pp = pr->pp;
	calais__mutex_lock(&pp->lock);
	if (pr->e)
		pr->e->r = NULL;
	pr->e = NULL;
	calais__mutex_unlock(&pp->lock);
	conn_close(&pp->cs->api, &pr->c);
}

static LONG pcsc_power_on(calais_reader *r, bool warm, uint8_t *atr, size_t *atr_len)
{
	struct pcsc_reader *pr = calais_reader_priv(r);
	struct pcsc_priv *pp = pr->pp;
	if (warm) {
		struct call *k = call_new(pr, OP_RESET, NULL, 0, MAX_ATR_SIZE);
		if (!k)
			return SCARD_E_NO_MEMORY;
		bool left;
		LONG rv = call_run(pr, k, 0, &left);
		if (left)
			return rv;
		if (rv == SCARD_S_SUCCESS) {
			memcpy(atr, k->out, k->out_len);
			*atr_len = k->out_len;
		}
		free(k);
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

static LONG pcsc_power_off(calais_reader *r)
{
	struct pcsc_reader *pr = calais_reader_priv(r);
	if (!pr->c.connected || pr->c.in_tx)
		return SCARD_S_SUCCESS;
	return call_simple(pr, OP_POWER_OFF, 0, 0, NULL, 0);
}

static LONG pcsc_set_protocol(calais_reader *r, uint32_t protocol)
{
	return call_simple(calais_reader_priv(r), OP_PROTOCOL, protocol, 0, NULL, 0);
}

/* Bounded by timeout_ms (the core's exchange limit) and cancel(), whatever the service
 * does; the service's own call may go on after (see the top of the file). */
static LONG pcsc_transmit(calais_reader *r, uint32_t protocol, const uint8_t *tx, size_t tx_len,
                          uint8_t *rx, size_t *rx_len, uint32_t timeout_ms)
{
	struct pcsc_reader *pr = calais_reader_priv(r);
	size_t cap = *rx_len > MAX_BUFFER_SIZE_EXTENDED ? MAX_BUFFER_SIZE_EXTENDED : *rx_len;
	struct call *k = call_new(pr, OP_TRANSMIT, tx, tx_len, cap);
	if (!k)
		return SCARD_E_NO_MEMORY;
	k->protocol = protocol;
	bool left;
	LONG rv = call_run(pr, k, timeout_ms, &left);
	if (left)
		return rv;
	if (rv == SCARD_S_SUCCESS)
		memcpy(rx, k->out, k->out_len);
	if (rv == SCARD_S_SUCCESS || rv == SCARD_E_INSUFFICIENT_BUFFER)
		*rx_len = k->out_len;
	free(k);
	return rv;
}

/* PIN entry can take the user's time: bounded by cancel() only (the core calls it at
 * removal, shutdown and its exchange limit). */
static LONG pcsc_control(calais_reader *r, uint32_t code, const uint8_t *in, size_t in_len,
                         uint8_t *out, size_t out_cap, size_t *out_len)
{
	struct pcsc_reader *pr = calais_reader_priv(r);
	size_t cap = out_cap > MAX_BUFFER_SIZE_EXTENDED ? MAX_BUFFER_SIZE_EXTENDED : out_cap;
	struct call *k = call_new(pr, OP_CONTROL, in, in_len, cap);
	if (!k)
		return SCARD_E_NO_MEMORY;
	k->code = code;
	bool left;
	LONG rv = call_run(pr, k, 0, &left);
	if (left)
		return rv;
	memcpy(out, k->out, k->out_len <= cap ? k->out_len : 0);
	*out_len = k->out_len;
	free(k);
	return rv;
}

static LONG pcsc_get_attrib(calais_reader *r, uint32_t id, uint8_t *buf, size_t *len)
{
	struct pcsc_reader *pr = calais_reader_priv(r);
	/* pcsc-lite refuses a buffer larger than MAX_BUFFER_SIZE outright. */
	size_t cap = *len > MAX_BUFFER_SIZE ? MAX_BUFFER_SIZE : *len;
	struct call *k = call_new(pr, OP_GET_ATTRIB, NULL, 0, cap);
	if (!k)
		return SCARD_E_NO_MEMORY;
	k->code = id;
	bool left;
	LONG rv = call_run(pr, k, 0, &left);
	if (left)
		return rv;
	if (rv == SCARD_S_SUCCESS)
		memcpy(buf, k->out, k->out_len);
	if (rv == SCARD_S_SUCCESS || rv == SCARD_E_INSUFFICIENT_BUFFER)
		*len = k->out_len;
	free(k);
	return rv;
}

static LONG pcsc_set_attrib(calais_reader *r, uint32_t id, const uint8_t *buf, size_t len)
{
	return call_simple(calais_reader_priv(r), OP_SET_ATTRIB, 0, id, buf, len);
}

/* The application's transaction or exclusive connection: a transaction at the service,
 * for exactly as long. pcsc-lite's SCardBeginTransaction() waits, polling every 100 ms,
 * for as long as another process holds one: cancel() ends our wait. */
static LONG pcsc_hold(calais_reader *r, bool held)
{
	struct pcsc_reader *pr = calais_reader_priv(r);
	if (!held && !pr->c.in_tx)
		return SCARD_S_SUCCESS;
	return call_simple(pr, held ? OP_HOLD : OP_UNHOLD, 0, 0, NULL, 0);
}

/* Never blocks: wakes the reader's caller, which leaves the service's call running. */
static void pcsc_cancel(calais_reader *r)
{
	struct pcsc_reader *pr = calais_reader_priv(r);
	struct calls *cs = pr->pp->cs;
	calais__mutex_lock(&cs->lock);
	pr->cancelled = true;
	if (pr->call)
		calais__cond_signal(&pr->call->cond);
	calais__mutex_unlock(&cs->lock);
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
	.cancel = pcsc_cancel,
};
