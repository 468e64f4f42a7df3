/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* calais-scan: a pcsc_scan-like monitor. Lists the readers, then waits for events with
 * SCardGetStatusChange on every reader and `\\?PnP?\Notification`, and prints reader
 * arrivals and removals, card insertions (with the ATR) and removals, and state changes.
 *
 *   calais-scan [--sim] [--once] [--verbose] [--count N] [--timeout S]
 *   calais-scan --atr HEX
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <winscard.h>
#include <calais/calais.h>

#define PNP "\\\\?PnP?\\Notification"

static void usage(FILE *f)
{
	fprintf(f, "usage: calais-scan [--sim] [--once] [--verbose] [--count N] [--timeout S]\n"
	           "       calais-scan --atr HEX\n"
	           "  --sim        simulated reader whose demo card comes and goes on a timer\n"
	           "  --once       print the current state and exit\n"
	           "  --count N    exit after N events (reader or card changes)\n"
	           "  --timeout S  exit after S seconds\n"
	           "  --verbose    decode every ATR seen\n"
	           "  --atr HEX    decode an ATR (exit status 1 when malformed)\n"
	           "  -h, --help   this text\n");
}

/* Parses a non-negative decimal number for --count and --timeout. */
static bool parse_count(const char *opt, const char *s, long *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < 0) {
		fprintf(stderr, "calais-scan: %s needs a non-negative number, not \"%s\"\n", opt, s);
		return false;
	}
	*out = v;
	return true;
}

static void stamp(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
#if defined(_WIN32)
	localtime_s(&tm, &ts.tv_sec);
#else
	localtime_r(&ts.tv_sec, &tm);
#endif
	printf("%02d:%02d:%02d.%03ld ", tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
}

static void print_state(DWORD s)
{
	static const struct {
		DWORD bit;
		const char *name;
	} bits[] = {
		{ SCARD_STATE_IGNORE, "IGNORE" },       { SCARD_STATE_UNKNOWN, "UNKNOWN" },
		{ SCARD_STATE_UNAVAILABLE, "UNAVAILABLE" }, { SCARD_STATE_EMPTY, "EMPTY" },
		{ SCARD_STATE_PRESENT, "PRESENT" },     { SCARD_STATE_EXCLUSIVE, "EXCLUSIVE" },
		{ SCARD_STATE_INUSE, "INUSE" },         { SCARD_STATE_MUTE, "MUTE" },
		{ SCARD_STATE_UNPOWERED, "UNPOWERED" },
	};
	const char *sep = "";
	for (size_t i = 0; i < sizeof(bits) / sizeof(bits[0]); i++)
		if (s & bits[i].bit) {
			printf("%s%s", sep, bits[i].name);
			sep = "|";
		}
	/* The high word counts the card events the reader has seen. */
	printf(" (events %lu)", (unsigned long)(s >> 16));
}

/* The ATR hook: prints an ATR, its card name from pcsc-tools' list when installed, and
 * (verbose) its decoding. Returns false for a malformed ATR. */
static bool describe_atr(const BYTE *atr, DWORD len, bool verbose)
{
	char text[4096];
	printf("  ATR:");
	for (DWORD i = 0; i < len; i++)
		printf(" %02X", atr[i]);
	printf("\n");
	if (calais_atr_lookup(atr, len, NULL, text, sizeof(text)) == SCARD_S_SUCCESS)
		for (char *l = strtok(text, "\n"); l; l = strtok(NULL, "\n"))
			printf("  Card: %s\n", l);
	LONG rv = calais_atr_describe(atr, len, text, sizeof(text));
	if (verbose || rv == SCARD_E_INVALID_ATR)
		for (char *l = strtok(text, "\n"); l; l = strtok(NULL, "\n"))
			printf("    %s\n", l);
	return rv != SCARD_E_INVALID_ATR;
}

/* calais-scan --atr HEX: decodes an ATR given on the command line. */
static int decode_atr_arg(const char *s)
{
	BYTE atr[MAX_ATR_SIZE];
	DWORD n = 0;
	int half = -1;
	for (; *s; s++) {
		if (*s == ' ' || *s == ':')
			continue;
		int v = *s >= '0' && *s <= '9' ? *s - '0'
		        : *s >= 'a' && *s <= 'f' ? *s - 'a' + 10
		        : *s >= 'A' && *s <= 'F' ? *s - 'A' + 10
		                                 : -1;
		if (v < 0) {
			fprintf(stderr, "calais-scan: '%c' is not a hex digit\n", *s);
			return 2;
		}
		if (half < 0) {
			half = v;
			continue;
		}
		if (n == sizeof(atr)) {
			fprintf(stderr, "calais-scan: an ATR has at most %d bytes\n", MAX_ATR_SIZE);
			return 1;
		}
		atr[n++] = (BYTE)(half << 4 | v);
		half = -1;
	}
	if (half >= 0) {
		fprintf(stderr, "calais-scan: odd number of hex digits\n");
		return 2;
	}
	return describe_atr(atr, n, true) ? 0 : 1;
}

/* ---- --sim: a simulated reader whose demo card is inserted and removed on a timer ---- */

static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond; /* signalled when stop is set */
	bool stop;           /* lock */
	calais_sim_reader *reader;
} sim = { .lock = PTHREAD_MUTEX_INITIALIZER };

/* Sleeps for ms milliseconds unless asked to stop; returns false when asked to stop. */
static bool sim_sleep(long ms)
{
	struct timespec until;
	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += ms / 1000;
	until.tv_nsec += (ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&sim.lock);
	while (!sim.stop && pthread_cond_timedwait(&sim.cond, &sim.lock, &until) != ETIMEDOUT)
		;
	bool go_on = !sim.stop;
	pthread_mutex_unlock(&sim.lock);
	return go_on;
}

static void *sim_timer(void *arg)
{
	(void)arg;
	for (;;) {
		if (!sim_sleep(500))
			break;
		LONG rv = calais_sim_card_insert(sim.reader, calais_sim_democard());
		if (rv != SCARD_S_SUCCESS)
			fprintf(stderr, "calais_sim_card_insert: %s\n", pcsc_stringify_error(rv));
		if (!sim_sleep(1500))
			break;
		rv = calais_sim_card_remove(sim.reader);
		if (rv != SCARD_S_SUCCESS)
			fprintf(stderr, "calais_sim_card_remove: %s\n", pcsc_stringify_error(rv));
	}
	return NULL;
}

/* Adds the simulated reader and starts the timer thread. */
static bool sim_start(pthread_t *thread)
{
	LONG rv = calais_sim_reader_add("Calais Virtual Reader", &sim.reader);
	if (rv != SCARD_S_SUCCESS) {
		fprintf(stderr, "calais_sim_reader_add: %s\n", pcsc_stringify_error(rv));
		return false;
	}
	pthread_condattr_t attr;
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&sim.cond, &attr);
	pthread_condattr_destroy(&attr);
	if (pthread_create(thread, NULL, sim_timer, NULL) != 0) {
		fprintf(stderr, "calais-scan: cannot start the simulation thread\n");
		pthread_cond_destroy(&sim.cond);
		return false;
	}
	return true;
}

static void sim_stop(pthread_t thread)
{
	pthread_mutex_lock(&sim.lock);
	sim.stop = true;
	pthread_cond_signal(&sim.cond);
	pthread_mutex_unlock(&sim.lock);
	pthread_join(thread, NULL);
	pthread_cond_destroy(&sim.cond);
}

/* ---- the watched readers ------------------------------------------------------------- */

struct watch {
	SCARD_READERSTATE *rs; /* rs[0] is the PnP pseudo-reader */
	char **names;          /* names[0] unused */
	DWORD n;               /* entries in rs, PnP included */
};

static void watch_free(struct watch *w)
{
	for (DWORD i = 1; i < w->n; i++)
		free(w->names[i]);
	free(w->names);
	free(w->rs);
	w->rs = NULL, w->names = NULL, w->n = 0;
}

static bool watch_has(const struct watch *w, const char *name)
{
	for (DWORD i = 1; i < w->n; i++)
		if (strcmp(w->names[i], name) == 0)
			return true;
	return false;
}

/*
 * Rebuilds the list of watched readers, keeping the known state of those still there.
 * With announce, prints each reader added or removed and adds their number to *changes.
 */
static LONG watch_build(SCARDCONTEXT ctx, struct watch *w, bool announce, long *changes)
{
	/* The PnP state is read before the list, so a reader that comes or goes between the
	 * two is reported by the next wait. */
	SCARD_READERSTATE pnp = { .szReader = PNP };
	if (w->n)
		pnp.dwCurrentState = w->rs[0].dwCurrentState;
	LONG rv = SCardGetStatusChange(ctx, 0, &pnp, 1);
	if (rv != SCARD_S_SUCCESS && rv != SCARD_E_TIMEOUT)
		return rv;

	char *list = NULL;
	DWORD len = SCARD_AUTOALLOCATE;
	rv = SCardListReaders(ctx, NULL, (LPSTR)&list, &len);
	if (rv == SCARD_E_NO_READERS_AVAILABLE)
		list = NULL;
	else if (rv != SCARD_S_SUCCESS)
		return rv;
	DWORD count = 1;
	for (const char *p = list; p && *p; p += strlen(p) + 1)
		count++;

	struct watch nw = { calloc(count, sizeof(*nw.rs)), calloc(count, sizeof(*nw.names)), 1 };
	rv = nw.rs && nw.names ? SCARD_S_SUCCESS : SCARD_E_NO_MEMORY;
	if (rv == SCARD_S_SUCCESS) {
		nw.rs[0].szReader = PNP;
		nw.rs[0].dwCurrentState = pnp.dwEventState & ~SCARD_STATE_CHANGED;
	}
	for (const char *p = list; rv == SCARD_S_SUCCESS && p && *p; p += strlen(p) + 1) {
		DWORD i = nw.n;
		if (!(nw.names[i] = strdup(p))) {
			rv = SCARD_E_NO_MEMORY;
			break;
		}
		nw.n++;
		nw.rs[i].szReader = nw.names[i];
		nw.rs[i].dwCurrentState = SCARD_STATE_UNAWARE;
		for (DWORD k = 1; k < w->n; k++)
			if (strcmp(w->names[k], p) == 0)
				nw.rs[i].dwCurrentState = w->rs[k].dwCurrentState;
		if (announce && !watch_has(w, p)) {
			stamp();
			printf("Reader added: %s\n", p);
			++*changes;
		}
	}
	for (DWORD k = 1; rv == SCARD_S_SUCCESS && announce && k < w->n; k++)
		if (!watch_has(&nw, w->names[k])) {
			stamp();
			printf("Reader removed: %s\n", w->names[k]);
			++*changes;
		}
	if (list)
		SCardFreeMemory(ctx, list);
	if (rv != SCARD_S_SUCCESS) {
		watch_free(&nw);
		return rv;
	}
	watch_free(w);
	*w = nw;
	return SCARD_S_SUCCESS;
}

/* Prints the changes SCardGetStatusChange() reported for the readers; returns how many
 * events they were (a reader's first state, already current, is not an event). */
static long report_readers(struct watch *w, bool verbose)
{
	long events = 0;
	for (DWORD i = 1; i < w->n; i++) {
		SCARD_READERSTATE *e = &w->rs[i];
		if (!(e->dwEventState & SCARD_STATE_CHANGED))
			continue;
		DWORD before = e->dwCurrentState, now = e->dwEventState & ~SCARD_STATE_CHANGED;
		stamp();
		printf("%s: ", e->szReader);
		if ((now & SCARD_STATE_PRESENT) && !(before & SCARD_STATE_PRESENT))
			printf("%s", before == SCARD_STATE_UNAWARE ? "card present, " : "card inserted, ");
		else if ((now & SCARD_STATE_EMPTY) && (before & SCARD_STATE_PRESENT))
			printf("card removed, ");
		print_state(now);
		printf("\n");
		if ((now & SCARD_STATE_PRESENT) && e->cbAtr &&
		    (!(before & SCARD_STATE_PRESENT) || verbose))
			describe_atr(e->rgbAtr, e->cbAtr, verbose);
		if (before != SCARD_STATE_UNAWARE)
			events++;
		e->dwCurrentState = now;
	}
	return events;
}

int main(int argc, char **argv)
{
	bool use_sim = false, once = false, verbose = false;
	long count = -1, timeout = -1;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		bool has_value = i + 1 < argc;
		if (strcmp(a, "--sim") == 0) {
			use_sim = true;
		} else if (strcmp(a, "--atr") == 0 && has_value) {
			return decode_atr_arg(argv[i + 1]);
		} else if (strcmp(a, "--verbose") == 0) {
			verbose = true;
		} else if (strcmp(a, "--once") == 0) {
			once = true;
		} else if (strcmp(a, "--count") == 0 && has_value) {
			if (!parse_count(a, argv[++i], &count))
				return 2;
		} else if (strcmp(a, "--timeout") == 0 && has_value) {
			if (!parse_count(a, argv[++i], &timeout))
				return 2;
		} else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			usage(stdout);
			return 0;
		} else {
			usage(stderr);
			return 2;
		}
	}
	setvbuf(stdout, NULL, _IOLBF, 0);

	pthread_t timer;
	if (use_sim && !sim_start(&timer))
		return 1;

	int status = 1;
	SCARDCONTEXT ctx;
	struct watch w = { 0 };
	long events = 0;
	LONG rv = SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &ctx);
	if (rv != SCARD_S_SUCCESS) {
		fprintf(stderr, "SCardEstablishContext: %s\n", pcsc_stringify_error(rv));
		goto out;
	}
	if ((rv = watch_build(ctx, &w, false, &events)) != SCARD_S_SUCCESS) {
		fprintf(stderr, "SCardListReaders: %s\n", pcsc_stringify_error(rv));
		goto out_ctx;
	}
	printf("%lu reader(s)\n", (unsigned long)(w.n - 1));
	for (DWORD i = 1; i < w.n; i++)
		printf("  %s\n", w.names[i]);

	struct timespec start;
	clock_gettime(CLOCK_MONOTONIC, &start);
	status = 0;
	for (;;) {
		DWORD wait = INFINITE;
		if (once) {
			wait = 0;
		} else if (timeout >= 0) {
			struct timespec now;
			clock_gettime(CLOCK_MONOTONIC, &now);
			long left = timeout * 1000 - ((now.tv_sec - start.tv_sec) * 1000 +
			                              (now.tv_nsec - start.tv_nsec) / 1000000);
			if (left <= 0)
				break;
			wait = (DWORD)left;
		}
		rv = SCardGetStatusChange(ctx, wait, w.rs, w.n);
		if (rv == SCARD_E_TIMEOUT)
			break;
		if (rv == SCARD_S_SUCCESS && (w.rs[0].dwEventState & SCARD_STATE_CHANGED))
			rv = SCARD_E_UNKNOWN_READER; /* the reader list changed: rebuild it */
		bool rebuilt = rv == SCARD_E_UNKNOWN_READER;
		if (rebuilt) {
			/* A new reader's state comes with the next wait, which returns at once
			 * since the reader is new to it (UNAWARE). */
			rv = watch_build(ctx, &w, true, &events);
		} else if (rv == SCARD_S_SUCCESS) {
			events += report_readers(&w, verbose);
		}
		if (rv != SCARD_S_SUCCESS) {
			fprintf(stderr, "calais-scan: %s\n", pcsc_stringify_error(rv));
			status = 1;
			break;
		}
		if ((once && !rebuilt) || (count >= 0 && events >= count))
			break;
	}
	printf("%ld event(s)\n", events);
out_ctx:
	watch_free(&w);
	SCardReleaseContext(ctx);
out:
	if (use_sim)
		sim_stop(timer);
	calais_shutdown();
	return status;
}
