// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * bench_neighbour: how long a card inserted in one reader takes to reach a thread waiting
 * in SCardGetStatusChange on it, whatever the neighbour reader's card does. Written
 * against <winscard.h> only; bench/neighbour/meson.build builds it against the system's
 * pcsc-lite (pcscd + vsmartcard's vpcd driver) and against Calais' static library (vpcd
 * backend). bench/neighbour/run puts (or leaves out) a card that never answers its ATR
 * request in the other reader, and alternates the builds round by round.
 *
 * The inserted card is played here, by a thread of this process speaking vpcd's protocol
 * as tests/peers/vcard does (GET ATR answered with vcard's default ATR, TCP_QUICKACK
 * re-armed after every read, each answer in one send), so the moment of its connection is
 * known exactly: the delay runs from just before connect() to the waiter's return with
 * the card PRESENT. The card then closes its connection (removal) and the waiter sees the
 * reader empty again before the next insertion, made after a random 20-420 ms pause so
 * that against pcscd it falls anywhere in its 400 ms polling cycle.
 *
 *   bench_neighbour -o FILE -l LABEL -P PORT [-H HOST] [-R READER] [-e EVENTS]
 *                   [-d MS] [-t MS]
 *
 *   -P PORT  the event reader's vpcd port (the card connects there)
 *   -H HOST  its host (default 127.0.0.1)
 *   -R       the event reader's name (default "Virtual PCD 00 01")
 *   -e N     insertions to time (default 10)
 *   -d MS    settle time before the first insertion, so that the neighbour's card is
 *            connected and stuck by then (default 1000)
 *   -t MS    how long one insertion may take to be seen (default 15000); one not seen
 *            by then is counted as missed and timed at that bound
 *
 * Samples are appended as "<label>\t<what>\t<microseconds>": insert (one per event),
 * first_establish (one per process), missed and mute (counts, when not 0: insertions not
 * seen in time, and insertions shown MUTE although the card answers its ATR request).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <winscard.h>

#include "../bench-clock.h"

static struct {
	const char *out;
	const char *label;
	const char *host;
	const char *port;
	const char *reader;
	int events;
	int settle_ms;
	int timeout_ms;
} opt = { NULL, NULL, "127.0.0.1", NULL, "Virtual PCD 00 01", 10, 1000, 15000 };

static FILE *out;
static SCARDCONTEXT ctx;

/* tests/peers/vcard's default ATR: T=1, "CalaisTestCard", correct TCK. */
static const uint8_t card_atr[] = { 0x3B, 0x8E, 0x01, 'C', 'a', 'l', 'a', 'i', 's',
                                    'T', 'e', 's', 't', 'C', 'a', 'r', 'd', 0xB8 };

__attribute__((noreturn))
static void die(const char *what, LONG rv)
{
	fprintf(stderr, "bench_neighbour[%s]: %s: %s (0x%08lX)\n", opt.label, what,
	        pcsc_stringify_error(rv), (unsigned long)rv);
	exit(1);
}

static void emit(const char *what, double us)
{
	fprintf(out, "%s\t%s\t%.3f\n", opt.label, what, us);
	fflush(out);
}

/* ---- the inserted card --------------------------------------------------------------- */

/*
 * One insertion: the card thread pauses, connects and answers until the main thread
 * shuts its socket down (the removal). Threading: fd and t_connect are written by the
 * card thread and read by the main thread, both under lock; the main thread only shuts
 * the socket down, the card thread closes it.
 */
struct card {
	pthread_t thread;
	pthread_mutex_t lock;
	double pause_us;
	double t_connect; /* just before connect(), us; 0 until then */
	int fd;           /* -1 until connected */
	bool removed;     /* the main thread asked for the removal */
	bool failed;
};

static void quickack(int fd)
{
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
}

/* Reads exactly n bytes; false when the connection ended. */
static bool card_read(int fd, uint8_t *buf, size_t n)
{
	size_t got = 0;
	while (got < n) {
		ssize_t k = recv(fd, buf + got, n - got, 0);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return false;
		got += (size_t)k;
		quickack(fd); /* vpcd sends length and payload apart: no delayed ACK between */
	}
	return true;
}

static bool card_send(int fd, const uint8_t *p, size_t n)
{
	uint8_t buf[2 + 64];
	buf[0] = (uint8_t)(n >> 8);
	buf[1] = (uint8_t)n;
	memcpy(buf + 2, p, n);
	return send(fd, buf, n + 2, MSG_NOSIGNAL) == (ssize_t)(n + 2);
}

static int card_connect(struct card *c, double *t)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *res;
	int g = getaddrinfo(opt.host, opt.port, &hints, &res);
	if (g != 0) {
		fprintf(stderr, "bench_neighbour: %s port %s: %s\n", opt.host, opt.port,
		        gai_strerror(g));
		return -1;
	}
	double until = now_us() + 5e6;
	for (;;) {
		int fd = socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC, res->ai_protocol);
		if (fd < 0)
			break;
		*t = now_us();
		if (connect(fd, res->ai_addr, res->ai_addrlen) == 0) {
			int one = 1;
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
			quickack(fd);
			freeaddrinfo(res);
			return fd;
		}
		close(fd);
		pthread_mutex_lock(&c->lock);
		bool removed = c->removed;
		pthread_mutex_unlock(&c->lock);
		/* The reader is not listening yet (or any more): try again shortly. */
		if (removed || now_us() > until)
			break;
		sleep_us(20e3);
	}
	fprintf(stderr, "bench_neighbour: cannot connect to %s port %s: %s\n", opt.host, opt.port,
	        strerror(errno));
	freeaddrinfo(res);
	return -1;
}

static void *card_main(void *arg)
{
	struct card *c = arg;
	double t = 0;
	sleep_us(c->pause_us);
	int fd = card_connect(c, &t);
	pthread_mutex_lock(&c->lock);
	c->t_connect = t;
	c->fd = fd;
	c->failed = fd < 0;
	if (fd >= 0 && c->removed)
		shutdown(fd, SHUT_RDWR);
	pthread_mutex_unlock(&c->lock);
	if (fd < 0)
		return NULL;
	for (;;) {
		uint8_t hdr[2], msg[512];
		if (!card_read(fd, hdr, 2))
			break;
		size_t len = (size_t)hdr[0] << 8 | hdr[1];
		if (len == 0 || len > sizeof msg || !card_read(fd, msg, len))
			break;
		if (len == 1 && msg[0] == 4) {
			if (!card_send(fd, card_atr, sizeof card_atr))
				break;
		} else if (len >= 2) {
			/* nobody sends APDUs here; answer "instruction not supported" */
			static const uint8_t sw[] = { 0x6D, 0x00 };
			if (!card_send(fd, sw, sizeof sw))
				break;
		}
	}
	close(fd);
	return NULL;
}

static void card_remove(struct card *c)
{
	pthread_mutex_lock(&c->lock);
	c->removed = true;
	if (c->fd >= 0)
		shutdown(c->fd, SHUT_RDWR);
	pthread_mutex_unlock(&c->lock);
	pthread_join(c->thread, NULL);
	pthread_mutex_destroy(&c->lock);
}

/* ---- the waiter ---------------------------------------------------------------------- */

/* Blocks until the reader holds a card (want_present) or none, starting from its
 * current state (the first call is UNAWARE: it answers at once); returns the time it
 * returned, or a negative value after timeout_ms. A reader not listed yet (a backend
 * still starting) is asked for again shortly. */
static double wait_state(SCARD_READERSTATE *rs, bool want_present, unsigned timeout_ms)
{
	double until = now_us() + timeout_ms * 1e3;
	rs->dwCurrentState = SCARD_STATE_UNAWARE;
	for (;;) {
		double left = (until - now_us()) / 1e3;
		if (left <= 0)
			return -1;
		LONG rv = SCardGetStatusChange(ctx, (DWORD)left, rs, 1);
		double t = now_us();
		if (rv == SCARD_E_TIMEOUT)
			return -1;
		if (rv == SCARD_E_UNKNOWN_READER) {
			sleep_us(20e3);
			rs->dwCurrentState = SCARD_STATE_UNAWARE;
			continue;
		}
		if (rv != SCARD_S_SUCCESS)
			die("SCardGetStatusChange", rv);
		rs->dwCurrentState = rs->dwEventState & ~(DWORD)SCARD_STATE_CHANGED;
		bool present = rs->dwEventState & SCARD_STATE_PRESENT;
		if (present == want_present)
			return t;
	}
}

/* ---- main ---------------------------------------------------------------------------- */

static void usage(void)
{
	fprintf(stderr, "usage: bench_neighbour -o FILE -l LABEL -P PORT [-H HOST] [-R READER]\n"
	                "                       [-e EVENTS] [-d MS] [-t MS]\n");
	exit(2);
}

static int int_arg(const char *s)
{
	char *end;
	long v = strtol(s, &end, 10);
	if (*end || *s == '\0' || v < 0 || v > 10000000)
		usage();
	return (int)v;
}

int main(int argc, char **argv)
{
	int c, missed = 0, mute = 0;
	while ((c = getopt(argc, argv, "o:l:H:P:R:e:d:t:")) != -1) {
		switch (c) {
		case 'o': opt.out = optarg; break;
		case 'l': opt.label = optarg; break;
		case 'H': opt.host = optarg; break;
		case 'P': opt.port = optarg; break;
		case 'R': opt.reader = optarg; break;
		case 'e': opt.events = int_arg(optarg); break;
		case 'd': opt.settle_ms = int_arg(optarg); break;
		case 't': opt.timeout_ms = int_arg(optarg); break;
		default: usage();
		}
	}
	if (!opt.out || !opt.label || !opt.port || optind != argc || opt.timeout_ms < 1)
		usage();
	out = fopen(opt.out, "a");
	if (!out) {
		perror(opt.out);
		return 1;
	}
	rand_seed();

	double t0 = now_us();
	LONG rv = SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &ctx);
	if (rv != SCARD_S_SUCCESS)
		die("SCardEstablishContext", rv);
	emit("first_establish", now_us() - t0);

	/* The event reader starts empty (against pcscd, the previous round's card may still
	 * be shown for up to one 400 ms poll). */
	SCARD_READERSTATE rs = { .szReader = opt.reader };
	if (wait_state(&rs, false, 10000) < 0) {
		fprintf(stderr, "bench_neighbour[%s]: \"%s\" not listed, or not empty, after 10 s\n",
		        opt.label, opt.reader);
		return 1;
	}
	sleep_us(opt.settle_ms * 1e3);

	for (int i = 0; i < opt.events; i++) {
		struct card card = { .pause_us = 20e3 + rand_unit() * 400e3, .fd = -1 };
		pthread_mutex_init(&card.lock, NULL);
		if (pthread_create(&card.thread, NULL, card_main, &card) != 0) {
			fprintf(stderr, "bench_neighbour: pthread_create failed\n");
			return 1;
		}
		double t = wait_state(&rs, true, (unsigned)opt.timeout_ms + 500);
		pthread_mutex_lock(&card.lock);
		double tc = card.t_connect;
		bool failed = card.failed;
		pthread_mutex_unlock(&card.lock);
		if (failed) {
			card_remove(&card);
			return 1;
		}
		if (t < 0 || t - tc > opt.timeout_ms * 1e3) {
			missed++;
			fprintf(stderr, "bench_neighbour[%s]: insertion %d not seen within %d ms\n",
			        opt.label, i, opt.timeout_ms);
			emit("insert", opt.timeout_ms * 1e3);
		} else {
			emit("insert", t - tc);
			if (rs.dwEventState & SCARD_STATE_MUTE) {
				mute++;
				fprintf(stderr, "bench_neighbour[%s]: insertion %d shown MUTE\n",
				        opt.label, i);
			}
		}
		card_remove(&card);
		if (wait_state(&rs, false, (unsigned)opt.timeout_ms + 500) < 0) {
			fprintf(stderr, "bench_neighbour[%s]: removal %d not seen within %d ms\n",
			        opt.label, i, opt.timeout_ms + 500);
			return 1;
		}
	}
	if (missed)
		emit("missed", missed);
	if (mute)
		emit("mute", mute);

	rv = SCardReleaseContext(ctx);
	if (rv != SCARD_S_SUCCESS)
		die("SCardReleaseContext", rv);
	if (fclose(out) != 0) {
		perror(opt.out);
		return 1;
	}
	return 0;
}
