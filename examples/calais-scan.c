/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* calais-scan: a pcsc_scan-like monitor. Lists the readers, then waits for events with
 * SCardGetStatusChange on every reader and `\\?PnP?\Notification`, and prints reader
 * arrivals and removals, card insertions (with the ATR) and removals, and state changes.
 *
 *   calais-scan [--sim] [--once] [--count N] [--timeout S]
 */
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
	           "  --atr HEX    decode an ATR (exit status 1 when malformed)\n"
	           "  --verbose    decode every ATR seen\n"
	           "  --sim        simulated reader whose demo card comes and goes on a timer\n"
	           "  --once       print the current state and exit\n"
	           "  --count N    exit after N events\n"
	           "  --timeout S  exit after S seconds\n");
}

static void stamp(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	localtime_r(&ts.tv_sec, &tm);
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
	printf(" (events %lu)", (unsigned long)(s >> 16));
}

/* Prints an ATR, its card name from pcsc-tools' list when installed, and (verbose) its
 * decoding. Returns false for a malformed ATR. */
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

/* --sim: a simulated reader whose demo card is inserted and removed on a timer. */
static volatile int sim_stop;
static void *sim_timer(void *arg)
{
	calais_sim_reader *r = arg;
	struct timespec half = { 0, 500 * 1000000L }, pause = { 1, 500 * 1000000L };
	while (!sim_stop) {
		nanosleep(&half, NULL);
		if (sim_stop)
			break;
		calais_sim_card_insert(r, calais_sim_democard());
		nanosleep(&pause, NULL);
		if (sim_stop)
			break;
		calais_sim_card_remove(r);
	}
	return NULL;
}

struct watch {
	SCARD_READERSTATE *rs; /* rs[0] is the PnP pseudo-reader */
	char **names;
	DWORD n;
};

static void watch_free(struct watch *w)
{
	for (DWORD i = 1; i < w->n; i++)
		free(w->names[i]);
	free(w->names);
	free(w->rs);
	w->rs = NULL, w->names = NULL, w->n = 0;
}

/* Rebuilds the list of watched readers, keeping the known state of those still there. */
static LONG watch_build(SCARDCONTEXT ctx, struct watch *w, bool announce)
{
	char *list = NULL;
	DWORD len = SCARD_AUTOALLOCATE;
	LONG rv = SCardListReaders(ctx, NULL, (LPSTR)&list, &len);
	if (rv != SCARD_S_SUCCESS && rv != SCARD_E_NO_READERS_AVAILABLE)
		return rv;
	DWORD count = 1;
	for (const char *p = list ? list : ""; rv == SCARD_S_SUCCESS && *p; p += strlen(p) + 1)
		count++;
	struct watch nw = { calloc(count, sizeof(SCARD_READERSTATE)), calloc(count, sizeof(char *)), count };
	if (!nw.rs || !nw.names) {
		free(nw.rs), free(nw.names);
		if (list)
			SCardFreeMemory(ctx, list);
		return SCARD_E_NO_MEMORY;
	}
	nw.rs[0].szReader = PNP;
	nw.rs[0].dwCurrentState = w->n ? w->rs[0].dwEventState & ~SCARD_STATE_CHANGED : 0;
	DWORD i = 1;
	for (const char *p = list ? list : ""; rv == SCARD_S_SUCCESS && *p; p += strlen(p) + 1, i++) {
		nw.names[i] = strdup(p);
		nw.rs[i].szReader = nw.names[i];
		bool known = false;
		for (DWORD k = 1; k < w->n; k++)
			if (strcmp(w->names[k], p) == 0) {
				nw.rs[i].dwCurrentState = w->rs[k].dwCurrentState;
				known = true;
			}
		if (!known && announce) {
			stamp();
			printf("Reader added: %s\n", p);
		}
	}
	for (DWORD k = 1; announce && k < w->n; k++) {
		bool still = false;
		for (DWORD j = 1; j < nw.n; j++)
			still |= strcmp(nw.names[j], w->names[k]) == 0;
		if (!still) {
			stamp();
			printf("Reader removed: %s\n", w->names[k]);
		}
	}
	if (list)
		SCardFreeMemory(ctx, list);
	watch_free(w);
	*w = nw;
	return SCARD_S_SUCCESS;
}

int main(int argc, char **argv)
{
	bool sim = false, once = false, verbose = false;
	long count = -1, timeout = -1;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--sim") == 0)
			sim = true;
		else if (strcmp(argv[i], "--atr") == 0 && i + 1 < argc)
			return decode_atr_arg(argv[i + 1]);
		else if (strcmp(argv[i], "--verbose") == 0)
			verbose = true;
		else if (strcmp(argv[i], "--once") == 0)
			once = true;
		else if (strcmp(argv[i], "--count") == 0 && i + 1 < argc)
			count = strtol(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc)
			timeout = strtol(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
			return usage(stdout), 0;
		else
			return usage(stderr), 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);

	pthread_t timer;
	bool have_timer = false;
	if (sim) {
		calais_sim_reader *r;
		LONG rv = calais_sim_reader_add("Calais Virtual Reader", &r);
		if (rv != SCARD_S_SUCCESS) {
			fprintf(stderr, "calais_sim_reader_add: %s\n", pcsc_stringify_error(rv));
			return 1;
		}
		have_timer = pthread_create(&timer, NULL, sim_timer, r) == 0;
	}

	SCARDCONTEXT ctx;
	LONG rv = SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &ctx);
	if (rv != SCARD_S_SUCCESS) {
		fprintf(stderr, "SCardEstablishContext: %s\n", pcsc_stringify_error(rv));
		return 1;
	}
	struct watch w = { 0 };
	if ((rv = watch_build(ctx, &w, false)) != SCARD_S_SUCCESS) {
		fprintf(stderr, "SCardListReaders: %s\n", pcsc_stringify_error(rv));
		return 1;
	}
	printf("%lu reader(s)\n", (unsigned long)(w.n - 1));
	for (DWORD i = 1; i < w.n; i++)
		printf("  %s\n", w.names[i]);

	struct timespec start;
	clock_gettime(CLOCK_MONOTONIC, &start);
	long events = 0;
	int status = 0;
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
		if (rv != SCARD_S_SUCCESS) {
			fprintf(stderr, "SCardGetStatusChange: %s\n", pcsc_stringify_error(rv));
			status = 1;
			break;
		}
		if (w.rs[0].dwEventState & SCARD_STATE_CHANGED) {
			events++;
			if (watch_build(ctx, &w, true) != SCARD_S_SUCCESS)
				break;
			continue; /* the new reader's state comes on the next round */
		}
		for (DWORD i = 1; i < w.n; i++) {
			SCARD_READERSTATE *e = &w.rs[i];
			if (!(e->dwEventState & SCARD_STATE_CHANGED))
				continue;
			DWORD before = e->dwCurrentState, now = e->dwEventState;
			stamp();
			printf("%s: ", e->szReader);
			if ((now & SCARD_STATE_PRESENT) && !(before & SCARD_STATE_PRESENT))
				printf("card inserted, ");
			else if ((now & SCARD_STATE_EMPTY) && (before & SCARD_STATE_PRESENT))
				printf("card removed, ");
			print_state(now & ~SCARD_STATE_CHANGED);
			printf("\n");
			if (now & SCARD_STATE_PRESENT && e->cbAtr)
				describe_atr(e->rgbAtr, e->cbAtr, verbose);
			if (before != SCARD_STATE_UNAWARE)
				events++;
			e->dwCurrentState = now & ~SCARD_STATE_CHANGED;
		}
		w.rs[0].dwCurrentState = w.rs[0].dwEventState & ~SCARD_STATE_CHANGED;
		if (once || (count >= 0 && events >= count))
			break;
	}
	printf("%ld event(s)\n", events);
	watch_free(&w);
	SCardReleaseContext(ctx);
	if (have_timer) {
		sim_stop = 1;
		pthread_join(timer, NULL);
	}
	calais_shutdown();
	return status;
}
