// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * bench_ops: times PC/SC operations through whichever <winscard.h> library it is linked
 * with. bench/ops/meson.build builds it twice: against the system's pcsc-lite (talking
 * to pcscd) and against Calais' static library (vpcd or simulated backend, chosen by the
 * environment). One process is one round; bench/ops/run alternates the builds round by
 * round so that both see the same machine noise.
 *
 * Each sample is one line "<label>\t<op>\t<microseconds>" appended to the -o file;
 * bench/ops/report.py pools the rounds and writes the tables. Warm-up iterations are
 * timed but not written.
 *
 *   bench_ops -o FILE -l LABEL [-n N] [-m N] [-w N] [-r READER]
 *             [-e EVENTS -R READER -p PID -a MS] [-S]
 *
 *   -n N   iterations of each fast operation (default 2000)
 *   -m N   iterations of the slow ones: GetStatusChange(0) and the whole session (500)
 *   -w N   warm-up iterations, not written (default 50)
 *   -r     the reader holding the fixture card (default "Virtual PCD 00 00")
 *   -e N   insertion/removal events to time on reader -R (default 0)
 *   -R     the event reader (default "Virtual PCD 00 01")
 *   -p PID the event card: a tests/peers/vcard run with --retry; SIGUSR1 removes it
 *   -a MS  its --away-ms: it reconnects that long after the signal
 *   -S     (Calais build) add a simulated reader whose card answers at once, use it as
 *          the fixture, and time events by inserting and removing that card
 *
 * The fixture card speaks tests/peers/vcard's commands: 00 A4 04 .. (SELECT) answers
 * 90 00 (2 bytes), 80 EF 00 FF answers 255 bytes and 90 00 (257 bytes).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <winscard.h>
#include <reader.h>

#if defined(BENCH_CALAIS_SIM)
#include <calais/sim.h>
#endif

#include "../bench-clock.h"

#define EVENT_TIMEOUT_MS 10000u

static struct {
	const char *out;
	const char *label;
	int n, m, warm;
	const char *reader;
	int events;
	const char *ev_reader;
	pid_t ev_pid;
	long away_ms;
	int sim;
} opt = { NULL, NULL, 2000, 500, 50, "Virtual PCD 00 00", 0, "Virtual PCD 00 01", 0, 0, 0 };

static FILE *out;
static double *samples;
static SCARDCONTEXT ctx;
static SCARDHANDLE card;
static const SCARD_IO_REQUEST *pci;
static char reader_name[256];
static SCARD_READERSTATE gsc0_state;
static LONG getattrib_rv = SCARD_S_SUCCESS;

static const BYTE apdu_select[] = { 0x00, 0xA4, 0x04, 0x00, 0x05, 0xA0, 0x00, 0x00, 0x00, 0x01 };
static const BYTE apdu_source255[] = { 0x80, 0xEF, 0x00, 0xFF, 0x00 };

__attribute__((noreturn))
static void die(const char *what, LONG rv)
{
	fprintf(stderr, "bench_ops[%s]: %s: %s (0x%08lX)\n", opt.label, what,
	        pcsc_stringify_error(rv), (unsigned long)rv);
	exit(1);
}

static void check(const char *what, LONG rv)
{
	if (rv != SCARD_S_SUCCESS)
		die(what, rv);
}

static void emit(const char *op, const double *v, int n)
{
	for (int i = 0; i < n; i++)
		fprintf(out, "%s\t%s\t%.3f\n", opt.label, op, v[i]);
}

/* ---- the fixture card when it is simulated (-S) ------------------------------------ */

#if defined(BENCH_CALAIS_SIM)
/* tests/peers/vcard's default ATR (T=1), so every run negotiates the same protocol. */
static const uint8_t sim_atr[] = { 0x3B, 0x8E, 0x01, 'C', 'a', 'l', 'a', 'i', 's',
                                   'T', 'e', 's', 't', 'C', 'a', 'r', 'd', 0xB8 };
static calais_sim_reader *sim_fixture, *sim_events;

/* The same answers as vcard's SELECT and "source" commands, computed in place. */
static LONG sim_apdu(void *user, const uint8_t *a, size_t n, uint8_t *r, size_t *rl)
{
	(void)user;
	size_t at = 0;
	uint16_t sw = 0x6D00;
	if (n >= 4 && a[0] == 0x00 && a[1] == 0xA4 && a[2] == 0x04) {
		sw = 0x9000;
	} else if (n >= 4 && a[0] == 0x80 && a[1] == 0xEF) {
		size_t count = (size_t)a[2] << 8 | a[3];
		if (count + 2 > *rl) {
			sw = 0x6700;
		} else {
			for (; at < count; at++)
				r[at] = (uint8_t)at;
			sw = 0x9000;
		}
	}
	r[at] = (uint8_t)(sw >> 8);
	r[at + 1] = (uint8_t)sw;
	*rl = at + 2;
	return SCARD_S_SUCCESS;
}

static const struct calais_sim_card sim_card = {
	.atr = sim_atr, .atr_len = sizeof sim_atr, .apdu = sim_apdu,
};
#endif

/* ---- helpers ----------------------------------------------------------------------- */

/* Waits until the reader is listed and holds a card; returns its last event state. */
static DWORD wait_present(const char *reader, unsigned timeout_ms)
{
	double until = now_us() + timeout_ms * 1e3;
	SCARD_READERSTATE rs = { .szReader = reader, .dwCurrentState = SCARD_STATE_UNAWARE };
	for (;;) {
		double left = (until - now_us()) / 1e3;
		if (left <= 0) {
			fprintf(stderr, "bench_ops[%s]: no card in \"%s\" after %u ms\n", opt.label,
			        reader, timeout_ms);
			exit(1);
		}
		LONG rv = SCardGetStatusChange(ctx, left > 200 ? 200 : (DWORD)left, &rs, 1);
		if (rv == SCARD_S_SUCCESS || rv == SCARD_E_TIMEOUT) {
			if ((rs.dwEventState & SCARD_STATE_PRESENT) &&
			    !(rs.dwEventState & (SCARD_STATE_MUTE | SCARD_STATE_UNAVAILABLE)))
				return rs.dwEventState & ~(DWORD)SCARD_STATE_CHANGED;
			if (rv == SCARD_S_SUCCESS)
				rs.dwCurrentState = rs.dwEventState & ~(DWORD)SCARD_STATE_CHANGED;
			continue;
		}
		if (rv != SCARD_E_UNKNOWN_READER)
			die("SCardGetStatusChange (waiting for the card)", rv);
		/* Not listed yet (a backend still starting): ask again shortly. */
		sleep_us(20e3);
		rs.dwCurrentState = SCARD_STATE_UNAWARE;
	}
}

static void transmit(SCARDHANDLE h, const BYTE *apdu, DWORD len, DWORD want)
{
	BYTE resp[300];
	DWORD rl = sizeof resp;
	check("SCardTransmit", SCardTransmit(h, pci, apdu, len, NULL, resp, &rl));
	if (rl != want || resp[rl - 2] != 0x90 || resp[rl - 1] != 0x00) {
		fprintf(stderr, "bench_ops[%s]: reply of %lu bytes ending %02X %02X, expected %lu "
		        "bytes ending 90 00\n", opt.label, (unsigned long)rl, resp[rl - 2],
		        resp[rl - 1], (unsigned long)want);
		exit(1);
	}
}

/* ---- the operations, one call each ----------------------------------------------- */

static void op_establish_release(void)
{
	SCARDCONTEXT c;
	check("SCardEstablishContext", SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &c));
	check("SCardReleaseContext", SCardReleaseContext(c));
}

static void op_list_readers(void)
{
	char buf[1024];
	DWORD len = sizeof buf;
	check("SCardListReaders", SCardListReaders(ctx, NULL, buf, &len));
}

static void op_connect_disconnect(void)
{
	SCARDHANDLE h;
	DWORD proto;
	check("SCardConnect", SCardConnect(ctx, reader_name, SCARD_SHARE_SHARED,
	                                   SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1, &h, &proto));
	check("SCardDisconnect", SCardDisconnect(h, SCARD_LEAVE_CARD));
}

static void op_transmit_2(void)
{
	transmit(card, apdu_select, sizeof apdu_select, 2);
}

static void op_transmit_257(void)
{
	transmit(card, apdu_source255, sizeof apdu_source255, 257);
}

static void op_status(void)
{
	char name[256];
	DWORD nl = sizeof name, state, proto, al;
	BYTE atr[MAX_ATR_SIZE];
	al = sizeof atr;
	check("SCardStatus", SCardStatus(card, name, &nl, &state, &proto, atr, &al));
}

/* pcscd forwards attributes to the driver, and vpcd's driver knows none: it answers
 * SCARD_E_UNSUPPORTED_FEATURE after the same round trip. Either answer counts. */
static void op_getattrib(void)
{
	BYTE buf[64];
	DWORD len = sizeof buf;
	LONG rv = SCardGetAttrib(card, SCARD_ATTR_ATR_STRING, buf, &len);
	if (rv != SCARD_S_SUCCESS && rv != SCARD_E_UNSUPPORTED_FEATURE)
		die("SCardGetAttrib", rv);
	getattrib_rv = rv;
}

/* The caller already knows the state, so nothing changes: SCARD_E_TIMEOUT. */
static void op_gsc0(void)
{
	LONG rv = SCardGetStatusChange(ctx, 0, &gsc0_state, 1);
	if (rv == SCARD_S_SUCCESS)
		gsc0_state.dwCurrentState = gsc0_state.dwEventState & ~(DWORD)SCARD_STATE_CHANGED;
	else if (rv != SCARD_E_TIMEOUT)
		die("SCardGetStatusChange(0)", rv);
}

static void op_transaction(void)
{
	check("SCardBeginTransaction", SCardBeginTransaction(card));
	check("SCardEndTransaction", SCardEndTransaction(card, SCARD_LEAVE_CARD));
}

/* What a short-lived client (one opensc-tool -s) does. */
static void op_session(void)
{
	SCARDCONTEXT c;
	SCARDHANDLE h;
	DWORD proto, len;
	char buf[1024];
	check("SCardEstablishContext", SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &c));
	len = sizeof buf;
	check("SCardListReaders", SCardListReaders(c, NULL, buf, &len));
	check("SCardConnect", SCardConnect(c, reader_name, SCARD_SHARE_SHARED,
	                                   SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1, &h, &proto));
	transmit(h, apdu_select, sizeof apdu_select, 2);
	check("SCardDisconnect", SCardDisconnect(h, SCARD_LEAVE_CARD));
	check("SCardReleaseContext", SCardReleaseContext(c));
}

#if defined(BENCH_CALAIS_SIM)
/* The simulated card's own work, called directly: subtracted from Transmit to give
 * what the manager adds. */
static volatile size_t sink;

static void op_cardfn_2(void)
{
	uint8_t r[300];
	size_t rl = sizeof r;
	sim_apdu(NULL, apdu_select, sizeof apdu_select, r, &rl);
	sink = rl;
}

static void op_cardfn_257(void)
{
	uint8_t r[300];
	size_t rl = sizeof r;
	sim_apdu(NULL, apdu_source255, sizeof apdu_source255, r, &rl);
	sink = rl;
}
#endif

static void run_op(const char *name, void (*fn)(void), int n)
{
	for (int i = -opt.warm; i < n; i++) {
		double t0 = now_us();
		fn();
		double t1 = now_us();
		if (i >= 0)
			samples[i] = t1 - t0;
	}
	emit(name, samples, n);
	fflush(out);
}

/* ---- insertion and removal --------------------------------------------------------- */

/* A helper thread makes the change after a random pause, so the waiter is already
 * blocked and (against pcscd) the change falls anywhere in its 400 ms polling cycle. */
struct trigger {
	pthread_t thread;
	double pause_us;
	bool insert;
	double t_change; /* when the change was made (us) */
};

static void *trigger_main(void *arg)
{
	struct trigger *t = arg;
	sleep_us(t->pause_us);
	t->t_change = now_us();
#if defined(BENCH_CALAIS_SIM)
	if (opt.sim) {
		LONG rv = t->insert ? calais_sim_card_insert(sim_events, &sim_card)
		                    : calais_sim_card_remove(sim_events);
		if (rv != SCARD_S_SUCCESS)
			die(t->insert ? "calais_sim_card_insert" : "calais_sim_card_remove", rv);
		return NULL;
	}
#endif
	if (!t->insert && kill(opt.ev_pid, SIGUSR1) < 0) {
		perror("bench_ops: kill(event card, SIGUSR1)");
		exit(1);
	}
	return NULL;
}

/* Blocks until the reader's state has (want_present) or lacks a card; returns the time
 * it returned, or a negative value on timeout. */
static double wait_change(SCARD_READERSTATE *rs, bool want_present)
{
	double until = now_us() + EVENT_TIMEOUT_MS * 1e3;
	for (;;) {
		double left = (until - now_us()) / 1e3;
		if (left <= 0)
			return -1;
		LONG rv = SCardGetStatusChange(ctx, (DWORD)left, rs, 1);
		double t = now_us();
		if (rv == SCARD_E_TIMEOUT)
			return -1;
		check("SCardGetStatusChange (event)", rv);
		rs->dwCurrentState = rs->dwEventState & ~(DWORD)SCARD_STATE_CHANGED;
		bool present = rs->dwEventState & SCARD_STATE_PRESENT;
		if (present == want_present)
			return t;
	}
}

static void run_events(void)
{
	double *ins = calloc((size_t)opt.events, sizeof *ins);
	double *rem = calloc((size_t)opt.events, sizeof *rem);
	int n_ins = 0, n_rem = 0, missed = 0;
	const char *rd = opt.ev_reader;
	if (!ins || !rem) {
		fprintf(stderr, "bench_ops: out of memory\n");
		exit(1);
	}
#if defined(BENCH_CALAIS_SIM)
	if (opt.sim)
		rd = calais_sim_reader_name(sim_events);
#endif
	SCARD_READERSTATE rs = { .szReader = rd };
	rs.dwCurrentState = wait_present(rd, EVENT_TIMEOUT_MS);

	for (int i = 0; i < opt.events; i++) {
		/* Removal: the card closes its connection (or is taken out of the simulated
		 * reader) while we wait. */
		struct trigger tr = { .pause_us = 20e3 + rand_unit() * 400e3, .insert = false };
		if (pthread_create(&tr.thread, NULL, trigger_main, &tr) != 0) {
			fprintf(stderr, "bench_ops: pthread_create failed\n");
			exit(1);
		}
		double t = wait_change(&rs, false);
		pthread_join(tr.thread, NULL);
		if (t < 0) {
			missed++;
			fprintf(stderr, "bench_ops[%s]: removal %d not seen within %u ms\n", opt.label,
			        i, EVENT_TIMEOUT_MS);
			rs.dwCurrentState = wait_present(rd, EVENT_TIMEOUT_MS);
			continue;
		}
		rem[n_rem++] = t - tr.t_change;

		/* Insertion: vcard comes back by itself --away-ms after the signal; the
		 * simulated card is put back by the helper. */
		double t_ins;
		if (opt.sim) {
			struct trigger ti = { .pause_us = 20e3 + rand_unit() * 100e3, .insert = true };
			if (pthread_create(&ti.thread, NULL, trigger_main, &ti) != 0) {
				fprintf(stderr, "bench_ops: pthread_create failed\n");
				exit(1);
			}
			t = wait_change(&rs, true);
			pthread_join(ti.thread, NULL);
			t_ins = ti.t_change;
		} else {
			t = wait_change(&rs, true);
			t_ins = tr.t_change + (double)opt.away_ms * 1e3;
		}
		if (t < 0) {
			missed++;
			fprintf(stderr, "bench_ops[%s]: insertion %d not seen within %u ms\n",
			        opt.label, i, EVENT_TIMEOUT_MS);
			rs.dwCurrentState = wait_present(rd, EVENT_TIMEOUT_MS);
			continue;
		}
		ins[n_ins++] = t - t_ins;
	}
	emit("event_insert", ins, n_ins);
	emit("event_remove", rem, n_rem);
	if (missed) {
		double m = missed;
		emit("event_missed", &m, 1);
	}
	free(ins);
	free(rem);
}

/* ---- main -------------------------------------------------------------------------- */

static void usage(void)
{
	fprintf(stderr, "usage: bench_ops -o FILE -l LABEL [-n N] [-m N] [-w N] [-r READER]\n"
	                "                 [-e EVENTS -R READER -p PID -a MS] [-S]\n");
	exit(2);
}

static int int_arg(const char *s)
{
	char *end;
	long v = strtol(s, &end, 10);
	if (*end || v < 0 || v > 10000000)
		usage();
	return (int)v;
}

int main(int argc, char **argv)
{
	int c;
	while ((c = getopt(argc, argv, "o:l:n:m:w:r:e:R:p:a:S")) != -1) {
		switch (c) {
		case 'o': opt.out = optarg; break;
		case 'l': opt.label = optarg; break;
		case 'n': opt.n = int_arg(optarg); break;
		case 'm': opt.m = int_arg(optarg); break;
		case 'w': opt.warm = int_arg(optarg); break;
		case 'r': opt.reader = optarg; break;
		case 'e': opt.events = int_arg(optarg); break;
		case 'R': opt.ev_reader = optarg; break;
		case 'p': opt.ev_pid = (pid_t)int_arg(optarg); break;
		case 'a': opt.away_ms = int_arg(optarg); break;
		case 'S': opt.sim = 1; break;
		default: usage();
		}
	}
	if (!opt.out || !opt.label || optind != argc || opt.n < 1 || opt.m < 1)
		usage();
#if !defined(BENCH_CALAIS_SIM)
	if (opt.sim) {
		fprintf(stderr, "bench_ops: -S needs the Calais build with the simulated backend\n");
		return 2;
	}
#endif
	if (opt.events && !opt.sim && (opt.ev_pid <= 0 || opt.away_ms <= 0)) {
		fprintf(stderr, "bench_ops: -e needs the event card's -p PID and -a MS\n");
		return 2;
	}
	out = fopen(opt.out, "a");
	samples = calloc((size_t)(opt.n > opt.m ? opt.n : opt.m), sizeof *samples);
	if (!out || !samples) {
		perror(opt.out);
		return 1;
	}
	rand_seed();

	/* The first context of the process: pcsc-lite connects to pcscd, Calais starts its
	 * manager and backends. Once per round, so one sample per round. */
	double t0 = now_us();
	check("SCardEstablishContext", SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &ctx));
	double first = now_us() - t0;
	emit("first_establish", &first, 1);

	snprintf(reader_name, sizeof reader_name, "%s", opt.reader);
#if defined(BENCH_CALAIS_SIM)
	if (opt.sim) {
		check("calais_sim_reader_add", calais_sim_reader_add("Bench Sim Reader", &sim_fixture));
		check("calais_sim_card_insert", calais_sim_card_insert(sim_fixture, &sim_card));
		snprintf(reader_name, sizeof reader_name, "%s", calais_sim_reader_name(sim_fixture));
		if (opt.events) {
			check("calais_sim_reader_add", calais_sim_reader_add("Bench Sim Events",
			                                                     &sim_events));
			check("calais_sim_card_insert", calais_sim_card_insert(sim_events, &sim_card));
		}
	}
#endif
	gsc0_state.szReader = reader_name;
	gsc0_state.dwCurrentState = wait_present(reader_name, EVENT_TIMEOUT_MS);

	DWORD proto;
	check("SCardConnect", SCardConnect(ctx, reader_name, SCARD_SHARE_SHARED,
	                                   SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1, &card, &proto));
	pci = proto == SCARD_PROTOCOL_T0 ? SCARD_PCI_T0 : SCARD_PCI_T1;

	run_op("establish_release", op_establish_release, opt.n);
	run_op("list_readers", op_list_readers, opt.n);
	run_op("connect_disconnect", op_connect_disconnect, opt.n);
	run_op("transmit_2", op_transmit_2, opt.n);
	run_op("transmit_257", op_transmit_257, opt.n);
	run_op("status", op_status, opt.n);
	run_op("getattrib", op_getattrib, opt.n);
	run_op("gsc0", op_gsc0, opt.m);
	run_op("transaction", op_transaction, opt.n);
	run_op("session", op_session, opt.m);
#if defined(BENCH_CALAIS_SIM)
	if (opt.sim) {
		run_op("cardfn_2", op_cardfn_2, opt.n);
		run_op("cardfn_257", op_cardfn_257, opt.n);
	}
#endif
	if (getattrib_rv == SCARD_E_UNSUPPORTED_FEATURE)
		fprintf(out, "%s\tnote_getattrib_unsupported\t0\n", opt.label);

	if (opt.events)
		run_events();

	check("SCardDisconnect", SCardDisconnect(card, SCARD_LEAVE_CARD));
	check("SCardReleaseContext", SCardReleaseContext(ctx));
	if (fclose(out) != 0) {
		perror(opt.out);
		return 1;
	}
	free(samples);
	return 0;
}
