// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * vcard: a virtual smart card for tests. It connects as a TCP client to a vpcd
 * reader port (vsmartcard's virtual reader driver for pcscd, or any server that
 * speaks the same protocol) and answers what the reader sends.
 *
 * Protocol (both directions): a 2-byte big-endian length, then that many bytes.
 *   reader -> card, length 1 = control byte: 0 power off, 1 power on, 2 reset
 *     (no answer to these three), 4 get ATR (answer: the ATR);
 *   reader -> card, length >= 2 = a C-APDU (answer: the R-APDU);
 *   length 0 and unknown control bytes are protocol errors (the card closes).
 *
 * Card commands (everything else answers 6D 00; a malformed APDU 67 00):
 *   00 A4 04 xx Lc AID        SELECT by name        -> 90 00
 *   80 EE xx xx Lc data [Le]  echo                  -> data 90 00
 *   80 EF P1 P2 [Le]          source                -> N = P1<<8|P2 bytes, byte i = i & 0xFF,
 *                                                      then 90 00 (N <= 65533, else 67 00)
 *   80 DD P1 xx [Le]          sleep P1 x 10 ms      -> 90 00
 * Short and extended Lc/Le encodings are accepted; Le is not checked.
 *
 * Faults, for isolation tests and benchmarks (at most one of them):
 *   --mute-atr          the card connects and then answers nothing, GET ATR included; it
 *                       stays connected until a signal, --hold-ms or the reader's close.
 *   --silent-after N    the card answers GET ATR and its first N APDUs of each connection,
 *                       then reads everything and answers nothing (a card that hangs in
 *                       mid-exchange: the reader's wait is the only thing that ends it).
 *   --reconnect-mute    the card connects, withholds its ATR, drops the connection when
 *                       the reader asks for something (GET ATR; --withhold-ms later when
 *                       given) or --drop-ms (1 s) after connecting, and connects again at
 *                       once, in a loop; --hold-ms then counts from the first connection.
 *
 * Signals: SIGTERM/SIGINT close the socket and exit 0. SIGUSR1 closes the
 * connection ("card removed"); with --retry the card reconnects after --away-ms
 * (default 200 ms: "card re-inserted"), otherwise it exits 0. Against pcscd keep the
 * card away longer than its 400 ms presence poll, or the removal can fall between
 * two polls and never be seen.
 *
 * The reader side (vpcd) writes the length and the payload with two send()s and
 * no TCP_NODELAY, so Nagle holds the payload until the length is ACKed; a card
 * that delays its ACK (the Linux default when it has nothing to send) makes every
 * message cost ~40 ms. Re-arming TCP_QUICKACK after every recv() avoids that;
 * --no-quickack brings the stall back (for benchmarks). Our own answers go out in
 * one send() with TCP_NODELAY.
 *
 * Build: cc -std=c11 -D_GNU_SOURCE -Wall -Wextra -O2 -o vcard vcard.c
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define MAX_MSG 65535u          /* the 2-byte length field */
#define MAX_ATR 33u
#define SOURCE_MAX (MAX_MSG - 2u) /* largest "80 EF" answer that fits in one message */

/* Default ATR: 3B 8E 01 "CalaisTestCard" B8
 *   TS 3B direct convention; T0 8E: TD1 follows, 14 historical bytes;
 *   TD1 01: no more interface bytes, T=1; TCK B8 = XOR of T0..last historical byte. */
static const uint8_t default_atr[] = { 0x3B, 0x8E, 0x01, 'C', 'a', 'l', 'a', 'i', 's',
				       'T', 'e', 's', 't', 'C', 'a', 'r', 'd', 0xB8 };

static struct {
	const char *host;
	const char *port;
	uint8_t atr[MAX_ATR];
	size_t atr_len;
	int retry;
	double timeout_s;
	long hold_ms;
	long away_ms;
	const char *pidfile;
	int verbose;
	int quickack;
	int mute_atr;       /* --mute-atr */
	long silent_after;  /* --silent-after N, or -1 */
	int reconnect_mute; /* --reconnect-mute */
	long drop_ms;       /* --drop-ms: a --reconnect-mute connection's life without a request */
	long withhold_ms;   /* --withhold-ms: and after the reader's first request */
} opt = { "127.0.0.1", "35963", { 0 }, 0, 0, 10.0, -1, 200, NULL, 0, 1, 0, -1, 0, 1000, 0 };

static volatile sig_atomic_t got_term, got_usr1;
static sigset_t run_mask; /* the signal mask inside ppoll(): nothing blocked */
static double t_start;
static double first_connect = -1; /* --reconnect-mute: --hold-ms counts from here */
static uint8_t inbuf[MAX_MSG];
static uint8_t outbuf[2 + MAX_MSG];

enum outcome {
	O_TERM,       /* SIGTERM / SIGINT */
	O_REMOVED,    /* SIGUSR1 */
	O_HOLD,       /* --hold-ms elapsed */
	O_DROP,       /* --reconnect-mute: the card dropped this connection */
	O_PEER_GONE,  /* the reader closed the connection (or reset it) */
	O_PROTOCOL,   /* malformed input from the reader */
	O_TIMEOUT,    /* could not connect within -t */
	O_FATAL,      /* unexpected local error */
};

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

__attribute__((format(printf, 1, 2)))
static void msg(const char *fmt, ...)
{
	va_list ap;
	char line[512];
	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	fprintf(stderr, "vcard[%ld] %10.3f ms: %s\n", (long)getpid(), now_ms() - t_start, line);
}

#define vlog(...) do { if (opt.verbose) msg(__VA_ARGS__); } while (0)

/* "3B 02 14 50" (at most 40 bytes shown, then the total) */
static const char *hex(const uint8_t *p, size_t n, char *buf, size_t cap)
{
	size_t i, o = 0, show = n > 40 ? 40 : n;
	buf[0] = '\0';
	for (i = 0; i < show && o + 4 < cap; i++)
		o += (size_t)snprintf(buf + o, cap - o, "%s%02X", i ? " " : "", p[i]);
	if (show < n && o + 24 < cap)
		snprintf(buf + o, cap - o, " ... (%zu bytes)", n);
	return buf;
}

static void on_signal(int sig)
{
	if (sig == SIGUSR1)
		got_usr1 = 1;
	else
		got_term = 1;
}

/* Waits for fd (or just sleeps when fd < 0) with the handled signals unblocked only
 * here, so a signal can never slip in between a flag check and a blocking call.
 * Returns 1 ready, 0 timeout, -1 error, -2 a signal flag is set. */
static int wait_io(int fd, short events, double timeout_ms)
{
	struct pollfd p = { fd, events, 0 };
	struct timespec ts, *tsp = NULL;
	int r;

	if (got_term || got_usr1)
		return -2;
	if (timeout_ms >= 0) {
		ts.tv_sec = (time_t)(timeout_ms / 1e3);
		ts.tv_nsec = (long)((timeout_ms - (double)ts.tv_sec * 1e3) * 1e6);
		tsp = &ts;
	}
	r = ppoll(&p, fd >= 0 ? 1 : 0, tsp, &run_mask);
	if (r < 0)
		return errno == EINTR ? -2 : -1;
	if (got_term || got_usr1)
		return -2;
	return r > 0 ? 1 : 0;
}

static enum outcome signal_outcome(void)
{
	return got_term ? O_TERM : O_REMOVED;
}

static void quickack(int fd)
{
#ifdef TCP_QUICKACK /* Linux */
	int one = 1;
	if (opt.quickack)
		setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
#else
	(void)fd;
#endif
}

/* Reads exactly n bytes. hold_at: absolute ms deadline (--hold-ms) or < 0.
 * Returns -1 on success, else the outcome that stopped it. */
static int read_full(int fd, uint8_t *buf, size_t n, double hold_at)
{
	size_t got = 0;
	while (got < n) {
		ssize_t r = recv(fd, buf + got, n - got, MSG_DONTWAIT);
		if (r > 0) {
			got += (size_t)r;
			quickack(fd); /* the kernel clears QUICKACK again; re-arm it after every recv */
			continue;
		}
		if (r == 0) {
			vlog("reader closed the connection%s", got ? " in the middle of a message" : "");
			return O_PEER_GONE;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			double left = -1;
			int w;
			if (hold_at >= 0) {
				left = hold_at - now_ms();
				if (left <= 0)
					return O_HOLD;
			}
			w = wait_io(fd, POLLIN, left);
			if (w == -2)
				return signal_outcome();
			if (w < 0) {
				msg("poll: %s", strerror(errno));
				return O_FATAL;
			}
			continue;
		}
		vlog("recv: %s", strerror(errno));
		return O_PEER_GONE; /* ECONNRESET and friends */
	}
	return -1;
}

static int send_msg(int fd, const uint8_t *payload, size_t n)
{
	size_t put = 0, total = n + 2;
	if (n > MAX_MSG)
		return O_FATAL;
	outbuf[0] = (uint8_t)(n >> 8);
	outbuf[1] = (uint8_t)n;
	if (payload != outbuf + 2)
		memmove(outbuf + 2, payload, n);
	while (put < total) {
		ssize_t r = send(fd, outbuf + put, total - put, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (r > 0) {
			put += (size_t)r;
			continue;
		}
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			int w = wait_io(fd, POLLOUT, -1);
			if (w == -2)
				return signal_outcome();
			if (w < 0)
				return O_FATAL;
			continue;
		}
		vlog("send: %s", strerror(errno));
		return O_PEER_GONE;
	}
	return -1;
}

/* Interruptible sleep; -1 when it ran to the end, else the outcome. */
static int sleep_ms(double ms)
{
	double until = now_ms() + ms;
	for (;;) {
		double left = until - now_ms();
		int w;
		if (left <= 0)
			return -1;
		w = wait_io(-1, 0, left);
		if (w == -2)
			return signal_outcome();
		if (w < 0 && errno != EINTR)
			return O_FATAL;
	}
}

/* ---------------------------------------------------------------------------------- */
/* APDUs                                                                              */

struct apdu {
	uint8_t cla, ins, p1, p2;
	const uint8_t *data;
	size_t lc;
	long le;    /* -1 absent; else Ne (a coded 0 means 256 / 65536) */
};

/* ISO 7816-3 cases 1, 2S, 3S, 4S, 2E, 3E, 4E. Returns 0 or -1 (malformed). */
static int parse_apdu(const uint8_t *a, size_t n, struct apdu *o)
{
	size_t body;
	if (n < 4)
		return -1;
	o->cla = a[0];
	o->ins = a[1];
	o->p1 = a[2];
	o->p2 = a[3];
	o->data = NULL;
	o->lc = 0;
	o->le = -1;
	body = n - 4;
	if (body == 0)
		return 0;                                       /* case 1 */
	if (body == 1) {                                        /* case 2S */
		o->le = a[4] ? a[4] : 256;
		return 0;
	}
	if (a[4] != 0) {                                        /* cases 3S, 4S */
		o->lc = a[4];
		o->data = a + 5;
		if (body == 1 + o->lc)
			return 0;
		if (body == 2 + o->lc) {
			o->le = a[n - 1] ? a[n - 1] : 256;
			return 0;
		}
		return -1;
	}
	if (body == 3) {                                        /* case 2E */
		unsigned le = (unsigned)a[5] << 8 | a[6];
		o->le = le ? (long)le : 65536;
		return 0;
	}
	if (body < 3)
		return -1;
	o->lc = (size_t)a[5] << 8 | a[6];                       /* cases 3E, 4E */
	o->data = a + 7;
	if (o->lc == 0)
		return -1;
	if (body == 3 + o->lc)
		return 0;
	if (body == 5 + o->lc) {
		unsigned le = (unsigned)a[n - 2] << 8 | a[n - 1];
		o->le = le ? (long)le : 65536;
		return 0;
	}
	return -1;
}

static size_t put_sw(uint8_t *r, size_t at, unsigned sw)
{
	r[at] = (uint8_t)(sw >> 8);
	r[at + 1] = (uint8_t)sw;
	return at + 2;
}

/* Builds the R-APDU in outbuf + 2; returns its length, or -(outcome) - 1 when a
 * signal cut a "sleep" command short. */
static long answer_apdu(const uint8_t *a, size_t n)
{
	uint8_t *r = outbuf + 2;
	struct apdu c;
	size_t i;

	if (parse_apdu(a, n, &c) < 0)
		return (long)put_sw(r, 0, 0x6700);

	if (c.cla == 0x00 && c.ins == 0xA4 && c.p1 == 0x04)
		return (long)put_sw(r, 0, 0x9000);

	if (c.cla == 0x80 && c.ins == 0xEE) {
		if (c.lc)
			memcpy(r, c.data, c.lc);
		return (long)put_sw(r, c.lc, 0x9000);
	}

	if (c.cla == 0x80 && c.ins == 0xEF) {
		size_t count = (size_t)c.p1 << 8 | c.p2;
		if (count > SOURCE_MAX)
			return (long)put_sw(r, 0, 0x6700);
		for (i = 0; i < count; i++)
			r[i] = (uint8_t)(i & 0xFF);
		return (long)put_sw(r, count, 0x9000);
	}

	if (c.cla == 0x80 && c.ins == 0xDD) {
		int s;
		vlog("sleeping %u ms", c.p1 * 10u);
		s = sleep_ms(c.p1 * 10.0);
		if (s >= 0)
			return -(long)s - 1;
		return (long)put_sw(r, 0, 0x9000);
	}

	return (long)put_sw(r, 0, 0x6D00);
}

/* ---------------------------------------------------------------------------------- */
/* connection                                                                         */

/* A read that ran into the earlier of the two deadlines: which one it was. */
static int expired(int r, double drop_at)
{
	if (r == O_HOLD && drop_at >= 0 && now_ms() >= drop_at &&
	    (opt.hold_ms < 0 || now_ms() < first_connect + (double)opt.hold_ms))
		return O_DROP;
	return r;
}

/* One connection, serving until something ends it. The fault options decide what is
 * answered: mute (nothing), or the reconnecting card's drop at the first request. */
static enum outcome serve(int fd)
{
	double t0 = now_ms();
	double hold_at, drop_at = opt.reconnect_mute ? t0 + (double)opt.drop_ms : -1;
	double deadline;
	char h[192];
	unsigned long nmsg = 0, napdu = 0;
	int mute = opt.mute_atr || opt.reconnect_mute, asked = 0;

	if (first_connect < 0 || !opt.reconnect_mute)
		first_connect = t0;
	hold_at = opt.hold_ms >= 0 ? first_connect + (double)opt.hold_ms : -1;
	deadline = hold_at < 0 ? drop_at : drop_at < 0 || hold_at < drop_at ? hold_at : drop_at;
	if (mute)
		vlog("%s", opt.mute_atr ? "mute: answering nothing" : "withholding the ATR");

	for (;;) {
		uint8_t hdr[2];
		size_t len;
		int r = read_full(fd, hdr, 2, deadline);
		if (r >= 0)
			return (enum outcome)expired(r, drop_at);
		len = (size_t)hdr[0] << 8 | hdr[1];
		if (len == 0) {
			msg("protocol error: message of length 0 from the reader; closing");
			return O_PROTOCOL;
		}
		r = read_full(fd, inbuf, len, deadline);
		if (r >= 0)
			return (enum outcome)expired(r, drop_at);
		nmsg++;

		if (len >= 2 || inbuf[0] == 4) {
			/* A request that wants an answer. */
			if (opt.reconnect_mute && opt.withhold_ms == 0) {
				vlog("<- %s: dropping the connection", len >= 2 ? "APDU" : "get ATR");
				return O_DROP;
			}
			if (opt.reconnect_mute && !asked) {
				/* the first request: the connection has withhold_ms left */
				asked = 1;
				drop_at = now_ms() + (double)opt.withhold_ms;
				if (hold_at < 0 || drop_at < hold_at)
					deadline = drop_at;
				vlog("<- %s: dropping the connection in %ld ms",
				     len >= 2 ? "APDU" : "get ATR", opt.withhold_ms);
				continue;
			}
			if (!mute && len >= 2 && opt.silent_after >= 0 &&
			    napdu >= (unsigned long)opt.silent_after) {
				vlog("silent after %lu APDUs: answering nothing from now on", napdu);
				mute = 1;
			}
			if (mute) {
				vlog("<- %s (not answered)", len >= 2 ? "APDU" : "get ATR");
				continue;
			}
		}

		if (len == 1) {
			switch (inbuf[0]) {
			case 0:
				vlog("<- power off");
				break;
			case 1:
				vlog("<- power on");
				break;
			case 2:
				vlog("<- reset");
				break;
			case 4:
				vlog("<- get ATR; -> %s", hex(opt.atr, opt.atr_len, h, sizeof h));
				r = send_msg(fd, opt.atr, opt.atr_len);
				if (r >= 0)
					return (enum outcome)r;
				break;
			default:
				msg("protocol error: unknown control byte 0x%02X from the reader; closing",
				    inbuf[0]);
				return O_PROTOCOL;
			}
			continue;
		}

		{
			long rl;
			napdu++;
			vlog("<- APDU %s", hex(inbuf, len, h, sizeof h));
			rl = answer_apdu(inbuf, len);
			if (rl < 0)
				return (enum outcome)(-rl - 1);
			vlog("-> %s", hex(outbuf + 2, (size_t)rl, h, sizeof h));
			r = send_msg(fd, outbuf + 2, (size_t)rl);
			if (r >= 0)
				return (enum outcome)r;
		}
	}
}

/* Returns a connected socket, or -1 with *why set. Single attempt unless --retry;
 * bounded by -t either way. */
static int connect_card(enum outcome *why)
{
	double deadline = now_ms() + opt.timeout_s * 1e3;
	int attempts = 0, last_err = 0;
	struct addrinfo hints, *res = NULL, *ai;
	int g;

	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	g = getaddrinfo(opt.host, opt.port, &hints, &res);
	if (g != 0) {
		msg("cannot resolve %s port %s: %s", opt.host, opt.port, gai_strerror(g));
		*why = O_FATAL;
		return -1;
	}

	for (;;) {
		for (ai = res; ai; ai = ai->ai_next) {
			int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
					ai->ai_protocol);
			int one = 1, err = 0;
			socklen_t el = sizeof err;
			if (fd < 0) {
				last_err = errno;
				continue;
			}
			attempts++;
			if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
				if (errno != EINPROGRESS) {
					last_err = errno;
					close(fd);
					continue;
				}
				g = wait_io(fd, POLLOUT, deadline - now_ms() > 0 ? deadline - now_ms() : 0);
				if (g == -2) {
					close(fd);
					freeaddrinfo(res);
					*why = signal_outcome();
					return -1;
				}
				if (g <= 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0 || err) {
					last_err = g == 0 ? ETIMEDOUT : err ? err : errno;
					close(fd);
					continue;
				}
			}
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
			quickack(fd);
			freeaddrinfo(res);
			vlog("connected to %s port %s (attempt %d)", opt.host, opt.port, attempts);
			return fd;
		}
		if (!opt.retry || now_ms() >= deadline) {
			msg("cannot connect to %s port %s%s: %s", opt.host, opt.port,
			    opt.retry ? " before the timeout" : "", strerror(last_err));
			freeaddrinfo(res);
			*why = O_TIMEOUT;
			return -1;
		}
		g = sleep_ms(deadline - now_ms() < 100 ? deadline - now_ms() : 100);
		if (g >= 0) {
			if (g == O_REMOVED && !got_term) {
				got_usr1 = 0; /* no card in the reader: nothing to remove */
				continue;
			}
			freeaddrinfo(res);
			*why = (enum outcome)g;
			return -1;
		}
	}
}

/* ---------------------------------------------------------------------------------- */

static int parse_hex(const char *s, uint8_t *out, size_t cap, size_t *n)
{
	size_t k = 0;
	int hi = -1;
	for (; *s; s++) {
		int v;
		if (*s == ' ' || *s == ':' || *s == '\t' || *s == '-' || *s == ',')
			continue;
		if (*s >= '0' && *s <= '9')
			v = *s - '0';
		else if (*s >= 'a' && *s <= 'f')
			v = *s - 'a' + 10;
		else if (*s >= 'A' && *s <= 'F')
			v = *s - 'A' + 10;
		else
			return -1;
		if (hi < 0) {
			hi = v;
		} else {
			if (k == cap)
				return -1;
			out[k++] = (uint8_t)(hi << 4 | v);
			hi = -1;
		}
	}
	if (hi >= 0)
		return -1;
	*n = k;
	return 0;
}

/* Structural check of an ATR (length vs. T0/TDi, TCK when a protocol other than
 * T=0 is offered). Returns NULL when consistent, else what is wrong. The card still
 * uses an inconsistent ATR (tests may want exactly that); we only warn. */
static const char *atr_problem(const uint8_t *a, size_t n)
{
	size_t i = 1, hist;
	int need_tck = 0, y;
	if (n < 2)
		return "shorter than 2 bytes";
	if (a[0] != 0x3B && a[0] != 0x3F)
		return "TS is neither 3B nor 3F";
	y = a[1] >> 4;
	hist = a[1] & 0x0F;
	for (;;) {
		int td = y & 8;
		i += (size_t)((y & 1) + ((y >> 1) & 1) + ((y >> 2) & 1));
		if (!td)
			break;
		i++;
		if (i >= n)
			return "truncated in the interface bytes";
		if ((a[i] & 0x0F) != 0)
			need_tck = 1;
		y = a[i] >> 4;
	}
	i += 1 + hist; /* i now = index past the historical bytes */
	if (n < i)
		return "truncated in the historical bytes";
	if (need_tck) {
		uint8_t x = 0;
		size_t k;
		if (n != i + 1)
			return n < i + 1 ? "TCK missing" : "bytes after TCK";
		for (k = 1; k < n; k++)
			x ^= a[k];
		if (x != 0)
			return "TCK mismatch";
	} else if (n != i) {
		return "extra bytes after the historical bytes (T=0 only: no TCK)";
	}
	return NULL;
}

/* A count or a time in ms (0 or more) for option name; 0, or -1 after the message. */
static int count_arg(const char *name, long *out)
{
	char *end;
	long v = strtol(optarg, &end, 10);
	if (*end || *optarg == '\0' || v < 0) {
		fprintf(stderr, "vcard: bad %s '%s'\n", name, optarg);
		return -1;
	}
	*out = v;
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: vcard [-H host] [-P port] [--atr HEX] [--retry] [-t seconds]\n"
		"             [--hold-ms N] [--away-ms N] [--pidfile FILE] [--no-quickack] [-v]\n"
		"             [--mute-atr | --silent-after N |\n"
		"              --reconnect-mute [--drop-ms N] [--withhold-ms N]]\n"
		"  -H, --host HOST     vpcd host (default 127.0.0.1)\n"
		"  -P, --port PORT     vpcd reader port (default 35963; slot 1 is PORT+1)\n"
		"      --atr HEX       ATR to report (default 3B 8E 01 43 61 6C 61 69 73 54 65 73 74\n"
		"                      43 61 72 64 B8 = T=1, \"CalaisTestCard\")\n"
		"      --retry         retry the connection every 100 ms (up to -t), reconnect\n"
		"                      when the reader goes away and --away-ms after SIGUSR1\n"
		"  -t, --timeout S     bound for each connection phase (default 10 s)\n"
		"      --hold-ms N     remove the card (close and exit 0) N ms after connecting\n"
		"      --away-ms N     with --retry, how long a card removed by SIGUSR1 stays out\n"
		"                      (default 200)\n"
		"      --pidfile FILE  write our PID there (removed at exit)\n"
		"      --no-quickack   do not re-arm TCP_QUICKACK (reproduces vicc's ~40 ms stall)\n"
		"  -v, --verbose       log every message to stderr\n"
		"faults (at most one):\n"
		"      --mute-atr      connect, then answer nothing (GET ATR included); stay\n"
		"                      connected until killed, --hold-ms or the reader's close\n"
		"      --silent-after N  answer GET ATR and the first N APDUs of each connection,\n"
		"                      then read everything and answer nothing\n"
		"      --reconnect-mute  connect, withhold the ATR, drop the connection at the\n"
		"                      reader's first request (GET ATR) or after --drop-ms, and\n"
		"                      connect again, in a loop (--hold-ms: from the first connect)\n"
		"      --drop-ms N     --reconnect-mute's connection without a request (default 1000)\n"
		"      --withhold-ms N  --reconnect-mute: drop N ms after the first request\n"
		"                      instead of at once (default 0)\n"
		"APDUs: 00A404xx SELECT -> 9000; 80EE echo; 80EF P1P2 source; 80DD P1 sleep P1*10 ms;\n"
		"others 6D00. Signals: TERM/INT exit 0; USR1 removes the card (--retry: re-insert).\n"
		"Exit: 0 terminated/removed/reader gone, 1 could not connect, 2 usage, 3 protocol error.\n");
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "host", required_argument, NULL, 'H' },
		{ "port", required_argument, NULL, 'P' },
		{ "atr", required_argument, NULL, 'a' },
		{ "retry", no_argument, NULL, 'r' },
		{ "timeout", required_argument, NULL, 't' },
		{ "hold-ms", required_argument, NULL, 'o' },
		{ "away-ms", required_argument, NULL, 'w' },
		{ "pidfile", required_argument, NULL, 'p' },
		{ "no-quickack", no_argument, NULL, 'q' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "mute-atr", no_argument, NULL, 'M' },
		{ "silent-after", required_argument, NULL, 'S' },
		{ "reconnect-mute", no_argument, NULL, 'R' },
		{ "drop-ms", required_argument, NULL, 'D' },
		{ "withhold-ms", required_argument, NULL, 'W' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct sigaction sa;
	sigset_t block;
	int c, status = 0, reconnects = 0;
	char *end;
	char h[192];

	t_start = now_ms();
	memcpy(opt.atr, default_atr, sizeof default_atr);
	opt.atr_len = sizeof default_atr;

	while ((c = getopt_long(argc, argv, "H:P:t:vh", lo, NULL)) != -1) {
		switch (c) {
		case 'H':
			opt.host = optarg;
			break;
		case 'P': {
			long p = strtol(optarg, &end, 10);
			if (*end || p < 1 || p > 65535) {
				fprintf(stderr, "vcard: bad port '%s'\n", optarg);
				return 2;
			}
			opt.port = optarg;
			break;
		}
		case 'a':
			if (parse_hex(optarg, opt.atr, sizeof opt.atr, &opt.atr_len) < 0 ||
			    opt.atr_len < 2) {
				fprintf(stderr, "vcard: bad --atr '%s' (2..33 hex bytes)\n", optarg);
				return 2;
			}
			break;
		case 'r':
			opt.retry = 1;
			break;
		case 't':
			opt.timeout_s = strtod(optarg, &end);
			if (*end || opt.timeout_s < 0) {
				fprintf(stderr, "vcard: bad timeout '%s'\n", optarg);
				return 2;
			}
			break;
		case 'o':
			if (count_arg("--hold-ms", &opt.hold_ms) < 0)
				return 2;
			break;
		case 'w':
			if (count_arg("--away-ms", &opt.away_ms) < 0)
				return 2;
			break;
		case 'p':
			opt.pidfile = optarg;
			break;
		case 'q':
			opt.quickack = 0;
			break;
		case 'v':
			opt.verbose = 1;
			break;
		case 'M':
			opt.mute_atr = 1;
			break;
		case 'S':
			if (count_arg("--silent-after", &opt.silent_after) < 0)
				return 2;
			break;
		case 'R':
			opt.reconnect_mute = 1;
			break;
		case 'D':
			if (count_arg("--drop-ms", &opt.drop_ms) < 0)
				return 2;
			break;
		case 'W':
			if (count_arg("--withhold-ms", &opt.withhold_ms) < 0)
				return 2;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}
	if (opt.mute_atr + opt.reconnect_mute + (opt.silent_after >= 0) > 1) {
		fprintf(stderr, "vcard: --mute-atr, --silent-after and --reconnect-mute exclude each other\n");
		return 2;
	}
	{
		const char *p = atr_problem(opt.atr, opt.atr_len);
		if (p)
			msg("warning: ATR %s: %s (used anyway)", hex(opt.atr, opt.atr_len, h, sizeof h), p);
	}

	/* Handled signals stay blocked except inside ppoll() (see wait_io). */
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGUSR1, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGUSR1);
	sigprocmask(SIG_BLOCK, &block, &run_mask);
	sigdelset(&run_mask, SIGTERM);
	sigdelset(&run_mask, SIGINT);
	sigdelset(&run_mask, SIGUSR1);

	if (opt.pidfile) {
		FILE *f = fopen(opt.pidfile, "w");
		if (!f || fprintf(f, "%ld\n", (long)getpid()) < 0 || fclose(f) != 0) {
			fprintf(stderr, "vcard: cannot write %s: %s\n", opt.pidfile, strerror(errno));
			return 2;
		}
	}
	vlog("ATR %s, %s port %s%s%s", hex(opt.atr, opt.atr_len, h, sizeof h), opt.host, opt.port,
	     opt.retry ? ", --retry" : "", opt.quickack ? "" : ", no QUICKACK");

	for (;;) {
		enum outcome o;
		int fd = connect_card(&o);
		if (fd >= 0) {
			o = serve(fd);
			close(fd);
		}
		if (o == O_TERM) {
			vlog("terminated");
			break;
		}
		if (o == O_TIMEOUT || o == O_FATAL) {
			status = 1;
			break;
		}
		if (o == O_PROTOCOL) {
			status = 3;
			break;
		}
		if (o == O_HOLD) {
			vlog("hold time (%ld ms) over: card removed", opt.hold_ms);
			break;
		}
		if (o == O_DROP) {
			reconnects++;
			continue; /* at once: the loop is the fault */
		}
		if (o == O_REMOVED) {
			got_usr1 = 0;
			vlog("SIGUSR1: card removed");
			if (!opt.retry)
				break;
			if (sleep_ms((double)opt.away_ms) == O_TERM)
				break;
			got_usr1 = 0;
			vlog("re-inserting the card");
		} else if (o == O_PEER_GONE) {
			if (!opt.retry) {
				msg("the reader closed the connection; exiting");
				break;
			}
			vlog("the reader closed the connection; reconnecting");
		}
		reconnects++;
	}

	if (opt.pidfile) {
		/* remove it only if it is still ours */
		FILE *f = fopen(opt.pidfile, "r");
		long pid = 0;
		if (f) {
			if (fscanf(f, "%ld", &pid) != 1)
				pid = 0;
			fclose(f);
			if (pid == (long)getpid())
				unlink(opt.pidfile);
		}
	}
	vlog("exit %d (%d reconnects)", status, reconnects);
	return status;
}
