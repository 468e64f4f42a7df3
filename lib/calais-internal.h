/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The core's one internal header: the real structures behind the opaque handles, the
 * manager, lock order, logging macros and helpers shared between core files. Backends
 * include it (for logging and threads) but reach the core only through backend.h. */
#ifndef CALAIS_INTERNAL_H
#define CALAIS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "calais/calais.h"
#include "calais/pcsc/winscard.h"
#include "calais/pcsc/reader.h"
#include "platform/threads.h"

#define CALAIS__ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* ---- logging ---------------------------------------------------------------- */

/* printf-style argument checking. On mingw-w64, "printf" means the MSVCRT dialect
 * (no %zu); the library is built with __USE_MINGW_ANSI_STDIO, whose formatting is C99's. */
#if defined(__MINGW32__)
#define CALAIS__PRINTF(f, a) __attribute__((format(gnu_printf, f, a)))
#elif defined(__GNUC__)
#define CALAIS__PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define CALAIS__PRINTF(f, a)
#endif

/* One logging path: every line goes through calais__log(), which formats into a fixed
 * buffer and queues it for the user's callback or stderr, delivered once the thread holds
 * no library lock (lib/log.c). */
void calais__log(int level, const char *domain, const char *fmt, ...) CALAIS__PRINTF(3, 4);
/* Current level, read without a lock so disabled levels cost one load. */
extern atomic_int calais__log_level;
void calais__log_set_trace_apdu(bool on);
void calais__log_init_from_env(void);
/* A CALAIS_LOG value: the level of a name (none, error, warning or warn, info, debug;
 * any case) or a digit 0 to 4; -1 for anything else. */
int calais__log_level_parse(const char *v);
#if defined(CALAIS_PLATFORM_POSIX)
void calais__log_atfork_prepare(void);
void calais__log_atfork_parent(void);
void calais__log_atfork_child(void);
#endif
/* Hex dump of an APDU for debug logs: only the header (CLA INS P1 P2 and the length
 * byte) unless trace_apdu_data is set, since bodies carry PINs and keys. */
void calais__log_apdu(const char *domain, const char *what, const uint8_t *buf, size_t len);
/* Whether card bytes other than an APDU's header may be logged: the trace_apdu_data
 * setting. Every log line that would show a byte sent to or received from a card (an
 * echo, a PIN pad's answer) asks this first. */
bool calais__log_card_bytes(void);

/* Replaces, in place, every character of s that is not printable ASCII or valid UTF-8
 * (controls, C1 controls, broken sequences) with `with` (lib/text.c). For text from
 * devices: reader names and every log line. */
void calais__sanitise(char *s, char with);

/* The `logging` build option: with it off, every log call compiles to nothing (the
 * arguments are still type-checked, and the optimiser drops them). */
#if !defined(CALAIS_LOGGING)
#define CALAIS_LOGGING 1
#endif
#define CALAIS__LOG_ON(level)                                                          \
	(CALAIS_LOGGING &&                                                             \
	 atomic_load_explicit(&calais__log_level, memory_order_relaxed) >= (level))
#define CALAIS__LOG(level, domain, ...)                                                \
	do {                                                                           \
		if (CALAIS__LOG_ON(level))                                             \
			calais__log((level), (domain), __VA_ARGS__);                   \
	} while (0)

#define calais__err(...) CALAIS__LOG(CALAIS_LOG_ERROR, "core", __VA_ARGS__)
#define calais__warn(...) CALAIS__LOG(CALAIS_LOG_WARNING, "core", __VA_ARGS__)
#define calais__info(...) CALAIS__LOG(CALAIS_LOG_INFO, "core", __VA_ARGS__)
#define calais__dbg(...) CALAIS__LOG(CALAIS_LOG_DEBUG, "core", __VA_ARGS__)

/* ---- errors ---------------------------------------------------------------------- */

/* pcsc_stringify_error(CALAIS__SELF_MARK) starts with "Calais" in every Calais build
 * (the passthrough backend refuses to load such a library: it would be itself). */
#define CALAIS__SELF_MARK ((LONG)0x43414C53)

/* ---- the ISO/IEC 7816-3 engine ------------------------------------------------------ */

/* ATR, PPS, T=0 and T=1 (lib/iso7816/): protocol code with no I/O of its own. */
#include "iso7816/iso7816.h"

/* ---- objects ---------------------------------------------------------------------- */

struct calais_handle;
struct calais_context;

struct calais_backend_instance {
	const struct calais_backend *be;
	struct calais_backend_instance *next; /* manager list; guarded by start_lock */
	bool configured; /* listed by the configuration, not started on demand */
	bool started;    /* init() succeeded */
	void *priv;
};

/* Card state of a slot, guarded by the manager lock. */
enum calais__card {
	CALAIS__CARD_ABSENT,
	CALAIS__CARD_INSERTED,  /* reported by the backend; power-up pending, not yet shown */
	CALAIS__CARD_POWERED,
	CALAIS__CARD_UNPOWERED, /* present, powered down while idle (ATR kept) */
	CALAIS__CARD_MUTE,      /* present, no answer to reset */
};

/*
 * A reader slot.
 *
 * Locks (the order is fixed: start_lock, then a reader's io_lock, then its cancel_lock,
 * then a backend's own locks, then mgr.lock; only one io_lock at a time):
 * - io_lock serialises backend calls for this reader; taken without mgr.lock held, by
 *   the application thread of a call or by the runner serving this reader (lib/jobs.c),
 *   never by a thread that serves other readers.
 * - cancel_lock orders a cancel with the start of the next I/O section (lib/jobs.c).
 * - Every other field is guarded by mgr.lock, except those set before publish and
 *   never changed (desc fields, names, bi, priv).
 */
struct calais_reader {
	struct calais_reader *next;      /* published list; mgr.lock */
	struct calais_reader *name_next; /* mgr.reader_hash chain; mgr.lock */
	struct calais_reader *dead_next; /* removed, waiting for close(); mgr.lock */
	calais_backend_instance *bi;
	unsigned refs; /* mgr.lock: the list, each handle, each call in progress */
	bool published, removed, closed, close_queued;
	bool closing; /* mgr.lock: close() runs (its section is never cancelled) */

	/* Identity, fixed at publish. */
	char *base;    /* "<name> [<interface>] (<serial>)" */
	char *name;    /* full PC/SC name, with " XX YY" */
	unsigned index; /* XX */
	char *vendor;
	uint32_t ifd_version, channel_id, max_input, slot, flags, protocols;
	struct calais_feature *features;
	size_t n_features;

	/* Card state (mgr.lock). */
	enum calais__card card;
	bool backend_present;   /* last presence the backend reported */
	LONG unavailable;       /* calais_reader_set_unavailable(): why, or 0 */
	bool held;              /* the backend's hold() is on (a transaction or exclusive) */
	bool power_up_pending;  /* a runner must power the card up to read its ATR */
	bool probe_pending;     /* CALAIS_READER_PROBE_PRESENCE: slot_status() once */
	uint8_t atr[MAX_ATR_SIZE];
	size_t atr_len;
	uint32_t protocol;       /* negotiated protocol; 0 until the first connect */
	uint16_t event_counter;  /* card events, upper 16 bits of dwEventState */
	uint32_t card_gen;       /* every insertion and removal the backend reported */
	int sharing;             /* -1 exclusive, else number of connections */
	unsigned n_handles;
	struct calais_handle *handles; /* handles connected to this reader */
	struct calais_handle *tx_owner;
	unsigned tx_depth;
	uint64_t tx_last_use_ms;  /* for the idle-transaction timeout */
	uint64_t power_down_at_ms; /* 0: no power-down scheduled */
	uint64_t next_poll_ms;
	calais__cond_t lock_cond; /* waits for a transaction (or I/O) to end; mgr.lock */

	calais__mutex_t io_lock;
	bool io_busy; /* mgr.lock: an I/O section is open (one at a time: io_lock) */

	/* Jobs (mgr.lock; lib/jobs.c): a reader with a job due is queued for a runner
	 * thread, which runs its jobs one after the other; one runner at a time. */
	struct calais_reader *run_next; /* mgr.run_queue */
	uint64_t queued_ms;             /* when it joined the queue */
	bool job_queued, job_active;

	/* The I/O section in progress and its cancel (mgr.lock; io_seq also under
	 * cancel_lock, so a cancel meant for one section never reaches the next one). */
	uint32_t io_seq;
	unsigned long io_owner;   /* the thread in the open section */
	uint64_t io_deadline_ms;  /* the exchange limit of the open section; 0: none */
	int cancel_reason;        /* CALAIS__CANCEL_*: why the open section must end */
	uint64_t cancel_sent_ms;  /* the backend's cancel() last called; 0: not yet */
	calais__mutex_t cancel_lock;

	void *priv;
};

/* Why the core ends an I/O section early, in increasing precedence; what the call then
 * returns: SCARD_E_TIMEOUT, SCARD_W_REMOVED_CARD, SCARD_E_READER_UNAVAILABLE,
 * SCARD_E_NO_SERVICE. */
enum { CALAIS__CANCEL_NONE = 0, CALAIS__CANCEL_TIMEOUT, CALAIS__CANCEL_CARD,
       CALAIS__CANCEL_READER, CALAIS__CANCEL_SHUTDOWN };

/* Pending card event for a handle, reported until SCardReconnect(). */
enum { CALAIS__EV_NONE = 0, CALAIS__EV_RESET, CALAIS__EV_REMOVED };

struct calais_handle {
	SCARDHANDLE id;
	struct calais_handle *hash_next;
	struct calais_context *ctx;
	struct calais_handle *ctx_next;
	struct calais_reader *reader;
	struct calais_handle *r_prev, *r_next;
	DWORD share;
	DWORD protocol; /* the protocol this handle sees as active */
	int pending;
	bool dead;
	unsigned refs; /* calls in progress */
};

struct calais_context {
	SCARDCONTEXT id;
	struct calais_context *hash_next;
	struct calais_handle *handles;
	uint32_t cancel_gen; /* bumped by SCardCancel(); waiters compare */
	unsigned waiters;
	bool dead;
	unsigned refs;
};

#define CALAIS__HASH_SIZE 1024u

/* The exchange limit's default (calais_config.exchange_timeout_ms): long enough for a PIN
 * entry on a pinpad, short enough that a stuck device is noticed. */
#define CALAIS__EXCHANGE_TIMEOUT_MS 300000u

/* A thread inside SCardGetStatusChange() (mgr.sc_waiters; mgr.lock). It sleeps on its own
 * condition variable and is woken only by a change of a reader it watches, a reader
 * arriving or leaving, a cancel or the shutdown: one card event does not wake the
 * waiters of every other reader. */
struct calais__sc_waiter {
	struct calais__sc_waiter *next, *prev;
	calais__cond_t cond;
	const SCARD_READERSTATE *states; /* the caller's; names read under mgr.lock */
	DWORD n;
};

/*
 * The manager: one per process.
 *
 * Lock order: start_lock (start, shutdown, backend registration) → a reader's io_lock →
 * its cancel_lock → backend locks → lock. Waiters sleep on the condition variables with
 * `lock` held. No user callback runs with any of them held (log lines wait in
 * lib/log.c's queue until the thread holds none).
 */
struct calais__manager {
	calais__mutex_t lock;
	calais__cond_t state_cond;  /* a reader's state changed (start-up waits for ATRs) */
	calais__cond_t worker_cond; /* work for the scheduler (lib/jobs.c) */
	calais__cond_t drain_cond;  /* active_calls reached zero */

	bool running;  /* lock */
	bool stopping; /* lock: shutdown in progress; calls bail out */
	unsigned active_calls;

	struct calais_config cfg;

	calais_backend_instance *backends; /* start_lock */

	struct calais_reader *readers; /* published, not removed */
	/* The same readers by name, for calais__reader_find(): SCardGetStatusChange() looks
	 * up every entry at every wake-up, which a list walk made O(readers²). */
	struct calais_reader *reader_hash[CALAIS__HASH_SIZE];
	unsigned n_readers;
	struct calais_reader *dead_readers; /* removed, close() pending */
	uint16_t pnp_counter;
	struct calais__sc_waiter *sc_waiters; /* threads in SCardGetStatusChange() */

	struct calais_context *ctx_hash[CALAIS__HASH_SIZE];
	struct calais_handle *handle_hash[CALAIS__HASH_SIZE];
	uint64_t rng;

	/* Jobs (lib/jobs.c): the scheduler thread and the runner pool. */
	calais__thread_t worker;        /* the scheduler */
	bool worker_running;
	bool worker_wake;
	uint64_t sched_next_ms;         /* when the scheduler wakes next (UINT64_MAX: idle) */
	calais__cond_t runner_cond;     /* idle runners wait here for run_queue */
	struct calais_reader *run_queue, **run_tail;
	struct calais__runner *runners; /* every runner thread not yet joined */
	unsigned n_runners, n_idle, n_woken;
	uint64_t last_spawn_ms;         /* when the pool last grew */
	bool ready; /* start-up finished: SCardEstablishContext() may proceed */
};

extern struct calais__manager calais__mgr;

/* lib/manager.c */
/* The manager started and its start-up finished (waits for one in progress, or makes
 * one); SCARD_E_NO_SERVICE during a shutdown or when the start fails. No lock held. */
LONG calais__ensure_started(void);
uint32_t calais__random32(void); /* mgr.lock held */
void calais__worker_kick(void);  /* wakes the scheduler (lib/jobs.c); mgr.lock held */
calais_backend_instance *calais__backend_activate(const struct calais_backend *be);
bool calais__backend_configured(calais_backend_instance *bi);
const char *calais__getenv(const char *name);
/* lib/iso7816/atr-list.c: calais_atr_lookup() on an open smartcard_list.txt (untrusted
 * text); atr holds 1 to MAX_ATR_SIZE bytes, cap > 0. */
LONG calais__atr_lookup_file(FILE *f, const uint8_t *atr, size_t len, char *buf, size_t cap);
/* The parsers of the CALAIS_* variables (untrusted text), apart so tests/fuzz can feed
 * them. A duration in ms (CALAIS_*_MS): *v set from digits only (up to 2^32 - 1); NULL
 * or "" keeps it; anything else keeps it, logged, SCARD_E_INVALID_VALUE. */
LONG calais__parse_ms(const char *name, const char *s, uint32_t *v);
/* An on/off switch (CALAIS_CCID_ESCAPE): on unless unset, empty or "0". */
bool calais__parse_flag(const char *s);
/* A backend list (CALAIS_BACKENDS or cfg.backends): names split at commas and spaces,
 * case-insensitive, each kept once, at most cap; NULL: the default set. An unknown name
 * is SCARD_E_INVALID_VALUE (logged) from the application, and reported on stderr and
 * skipped from the environment. */
LONG calais__parse_backends(const char *list, bool from_env, const struct calais_backend **want,
                            size_t cap, size_t *n);

/* lib/reader.c */
void calais__reader_unref(struct calais_reader *r); /* mgr.lock held */
struct calais_reader *calais__reader_find(const char *name); /* mgr.lock held */
/* An I/O section: a call that may reach the backend for r. begin takes r's io_lock in the
 * lock order, numbers the section and gives it the exchange limit; end closes it. Both
 * with mgr.lock held (begin drops it while it waits for the io_lock). The caller holds a
 * reference on r for as long as it touches r (begin does not take one). */
void calais__reader_io_begin(struct calais_reader *r);
void calais__reader_io_end(struct calais_reader *r);
/* What a backend call that returned SCARD_E_CANCELLED in an I/O section the core
 * cancelled returns instead: the reason of the cancel (CALAIS__CANCEL_*); any other rv
 * as it is. mgr.lock held. */
LONG calais__reader_io_rv(const struct calais_reader *r, LONG rv);
/* Asks for the open I/O section of r to end (the backend's cancel(), from the
 * scheduler). mgr.lock held. */
void calais__reader_cancel_io(struct calais_reader *r, int reason);
/* Powers the card up with the reader's io_lock held (and mgr.lock not held); updates the
 * card state and publishes the insertion. */
LONG calais__reader_power_up(struct calais_reader *r);
/* Warm reset, or power cycle when unpower; io_lock held, mgr.lock not held. */
LONG calais__reader_reset(struct calais_reader *r, bool unpower);
/* Powers the card down; io_lock held, mgr.lock not held. */
LONG calais__reader_power_down(struct calais_reader *r);
void calais__reader_close_all(void);
/* The backend said the device is gone (SCARD_E_READER_UNAVAILABLE): the reader is removed,
 * unless its backend marked it unavailable to keep it listed. mgr.lock not held. */
void calais__reader_lost(struct calais_reader *r);
void calais__reader_flag_handles(struct calais_reader *r, struct calais_handle *except, int ev);
/* Wakes what waits on a change of r (NULL: on any change, e.g. the reader list, a cancel,
 * the shutdown). mgr.lock held. */
void calais__reader_state_changed(struct calais_reader *r);
void calais__reader_release_tx(struct calais_reader *r);
void calais__reader_schedule_power_down(struct calais_reader *r);
/* The backend's hold() member, or NULL (tables older than abi_version 2 lack it). */
LONG (*calais__reader_hold_fn(const struct calais_reader *r))(calais_reader *, bool);
/* Asks the backend to hold the card (a transaction or an exclusive connection began);
 * mgr.lock held on entry and exit, dropped inside; io_locked: the caller holds the
 * reader's io_lock already. */
LONG calais__reader_hold(struct calais_reader *r, bool io_locked);

/* lib/jobs.c: the scheduler and runner threads (deferred jobs, the exchange limit). */
LONG calais__jobs_start(void);  /* mgr.lock held */
/* At shutdown, mgr.stopping set: cancels every open I/O section, waits for the calls in
 * progress to drain and joins every thread. mgr.lock held, dropped inside. */
void calais__jobs_stop(void);
/* Calls the backend's cancel() for r's open I/O section (cancel_reason set). mgr.lock
 * held, dropped inside. */
void calais__jobs_send_cancel(struct calais_reader *r);
/* In a child after fork(): forgets the parent's threads. */
void calais__jobs_forget(void);

/* lib/context.c */
void calais__contexts_free_all(void);

/* Built-in backends (the `builtin` table in lib/manager.c lists them). */
extern const struct calais_backend calais__backend_sim;
extern const struct calais_backend calais__backend_ccid;
extern const struct calais_backend calais__backend_pcsc;
extern const struct calais_backend calais__backend_vpcd;
extern const struct calais_backend calais__backend_serial;
extern const struct calais_backend calais__backend_hid;

#endif /* CALAIS_INTERNAL_H */
