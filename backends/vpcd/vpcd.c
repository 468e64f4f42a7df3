/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The vpcd backend: vsmartcard's virtual reader, in process. Calais listens on TCP, one port
 * per reader (port + i for reader i, "Virtual PCD 00 0i"); a virtual card (vsmartcard's
 * vicc, its Android app, tests/peers/vcard.c) connects as a client. The connection is the
 * card's insertion and its end the removal, both pushed to the core at once (pcscd's vpcd
 * polls every 400 ms). Every message is a 2-byte big-endian length and a payload: 1-byte
 * control messages (power off, power on, reset, get ATR) or an APDU, answered by one
 * message. One event thread accepts cards, reads each new card's ATR (without ever
 * blocking: a card is reported inserted only once its ATR is in) and watches idle ones;
 * exchanges run on the calling thread. No lock or thread is shared between readers across
 * I/O, so a mute or silent card stalls only its own reader. Configuration:
 * CALAIS_VPCD=host:port (127.0.0.1:35963) and CALAIS_VPCD_READERS (2, at most 16). */
#include "calais-internal.h"
#include "vpcd-int.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

#define vpcd_log(level, ...)                                                         \
	do {                                                                         \
		if (CALAIS__LOG_ON(level))                                    \
			calais__log((level), "vpcd", __VA_ARGS__);                   \
	} while (0)

#define DEFAULT_HOST "127.0.0.1" /* vpcd itself listens on every interface; we do not */
#define DEFAULT_PORT 35963u
#define DEFAULT_READERS 2u
#define MAX_READERS 16u
#define MAX_MSG 0xFFFFu /* the length field's limit */

/* Control messages (1-byte payloads, host to card). Only GET ATR is answered. */
#define CTRL_OFF 0u
#define CTRL_ON 1u
#define CTRL_RESET 2u
#define CTRL_ATR 4u

/* vpcd waits for ever. We do not: a card that does not send its ATR within this bound
 * is dropped unseen (at insertion, by the event thread, which meanwhile serves every
 * other reader), and a reset or power-up later on ends with an error after it. */
#define ATR_TIMEOUT_MS 5000u
/* An exchange is bounded by transmit()'s timeout_ms (the core's exchange limit); this is
 * only for a core that passes 0 (its default limit). */
#define APDU_TIMEOUT_MS 300000u
/* How long start-up waits for cards already trying to connect. A card whose ATR is not in
 * by then is reported when it comes: start-up never waits longer than this for a card. */
#define STARTUP_GRACE_MS 150u
#define BACKOFF_MIN_MS 250u
#define BACKOFF_MAX_MS 5000u

/* ---- sockets: the platform part ----------------------------------------------------- */

#if defined(_WIN32)
/* Windows has no socket layer here yet. What it needs: winsock2.h and ws2tcpip.h,
 * WSAStartup/WSACleanup in init/exit, SOCKET with INVALID_SOCKET and closesocket(),
 * WSAPoll() (no POLLRDHUP: the POLLIN watch below), ioctlsocket(FIONBIO), WSASend() with
 * two WSABUFs for sock_sendv(), SO_EXCLUSIVEADDRUSE instead of SO_REUSEADDR (which lets
 * another program take the port there), WSAGetLastError() for errno, and a connected
 * loopback socket pair as the wake-up channel. Everything else only calls the helpers in
 * this section. */
#error "the vpcd backend has no Windows socket layer yet"
#else
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

typedef int sock_t;
#define BAD_SOCK (-1)

/* How the event thread watches an idle card: POLLRDHUP (Linux) fires only when the card
 * closes its side, so answers arriving during an exchange never wake the event thread.
 * Elsewhere POLLIN, which answers do trigger: the event thread then leaves the busy socket
 * out until the exchange ends (see event_main). */
#if defined(POLLRDHUP)
#define WATCH_EVENTS (POLLRDHUP)
#else
#define WATCH_EVENTS (POLLIN)
#endif

#if defined(MSG_NOSIGNAL)
#define SEND_FLAGS MSG_NOSIGNAL
#else
#define SEND_FLAGS 0 /* SO_NOSIGPIPE is set on the socket instead (macOS) */
#endif

static int sock_errno(void)
{
	return errno;
}

static bool sock_again(int err)
{
	return err == EAGAIN || err == EWOULDBLOCK || err == EINTR;
}

/* Errors that mean the card's end went away (reset, not a local failure). */
static bool sock_gone(int err)
{
	return err == ECONNRESET || err == EPIPE || err == ENOTCONN || err == ETIMEDOUT ||
	       err == ECONNABORTED;
}

static void sock_close(sock_t s)
{
	if (s != BAD_SOCK)
		close(s);
}

/* Ends the connection at once (the card sees it) without freeing the descriptor, so a
 * thread polling it is woken and never sees the number reused. */
static void sock_shutdown(sock_t s)
{
	shutdown(s, SHUT_RDWR);
}

/* Non-blocking and close-on-exec; the atomic flags where the platform has them, so a
 * fork+exec elsewhere in the process cannot inherit a card's connection and keep it open. */
static void sock_flags(sock_t s)
{
	fcntl(s, F_SETFD, fcntl(s, F_GETFD) | FD_CLOEXEC);
	fcntl(s, F_SETFL, fcntl(s, F_GETFL) | O_NONBLOCK);
#if defined(SO_NOSIGPIPE)
	int one = 1;
	setsockopt(s, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof(one));
#endif
}

static sock_t sock_new(int family)
{
#if defined(SOCK_CLOEXEC) && defined(SOCK_NONBLOCK)
	sock_t s = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
#else
	sock_t s = socket(family, SOCK_STREAM, 0);
#endif
	if (s != BAD_SOCK)
		sock_flags(s);
	return s;
}

/* The next waiting connection; BAD_SOCK with *err set when there is none (EAGAIN) or on
 * failure. A connection that died in the queue is skipped. */
static sock_t sock_accept(sock_t l, struct sockaddr_storage *peer, int *err)
{
	for (;;) {
		socklen_t len = sizeof(*peer);
#if defined(__linux__) || defined(__FreeBSD__)
		sock_t s = accept4(l, (struct sockaddr *)peer, &len, SOCK_CLOEXEC | SOCK_NONBLOCK);
#else
		sock_t s = accept(l, (struct sockaddr *)peer, &len);
#endif
		if (s != BAD_SOCK) {
			sock_flags(s);
			return s;
		}
		*err = sock_errno();
		if (*err != EINTR && *err != ECONNABORTED)
			return BAD_SOCK;
	}
}

/* No Nagle on our side: a message leaves in one segment as soon as it is written. And
 * keep-alive probes, so a card whose host vanished without closing (a phone leaving the
 * Wi-Fi) is removed within about half a minute rather than at the next exchange. */
static void sock_tune(sock_t s)
{
	int one = 1;
	setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(s, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
#if defined(TCP_KEEPIDLE) && defined(TCP_KEEPINTVL) && defined(TCP_KEEPCNT)
	int idle = 10, intvl = 5, cnt = 3;
	setsockopt(s, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
	setsockopt(s, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
	setsockopt(s, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
#endif
}

/* Linux clears TCP_QUICKACK again after a while; re-armed after every receive, it keeps
 * our ACKs immediate, so a card that sends a message in two writes without TCP_NODELAY
 * does not wait ~40 ms for a delayed ACK each time. */
static void sock_quickack(sock_t s)
{
#if defined(TCP_QUICKACK)
	int one = 1;
	setsockopt(s, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof(one));
#else
	(void)s;
#endif
}

/* A listening socket on addr with the given port, or BAD_SOCK with *err set. */
static sock_t sock_listen(const struct sockaddr_storage *addr, socklen_t addr_len, uint16_t port,
                          int *err)
{
	struct sockaddr_storage a = *addr;
	if (a.ss_family == AF_INET)
		((struct sockaddr_in *)&a)->sin_port = htons(port);
	else
		((struct sockaddr_in6 *)&a)->sin6_port = htons(port);
	sock_t s = sock_new(a.ss_family);
	if (s == BAD_SOCK) {
		*err = sock_errno();
		return BAD_SOCK;
	}
	/* A port left in TIME_WAIT by the last run stays usable; one that is listened on
	 * still fails. */
	int one = 1;
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(s, (struct sockaddr *)&a, addr_len) != 0 || listen(s, 4) != 0) {
		*err = sock_errno();
		sock_close(s);
		return BAD_SOCK;
	}
	return s;
}

/* One vectored send: a message's length and payload leave together. */
struct chunk {
	const uint8_t *p;
	size_t n;
};

static long sock_sendv(sock_t s, const struct chunk *c, int n)
{
	struct iovec iov[2];
	for (int i = 0; i < n; i++) {
		iov[i].iov_base = (void *)(uintptr_t)c[i].p;
		iov[i].iov_len = c[i].n;
	}
	struct msghdr m = { .msg_iov = iov, .msg_iovlen = (size_t)n };
	return (long)sendmsg(s, &m, SEND_FLAGS);
}

static long sock_recv(sock_t s, uint8_t *buf, size_t n, bool peek)
{
	return (long)recv(s, buf, n, MSG_DONTWAIT | (peek ? MSG_PEEK : 0));
}

/* Waits for one socket; 1 ready (or hung up), 0 timeout, -1 error (errno). */
static int sock_wait(sock_t s, short events, int timeout_ms)
{
	struct pollfd p = { .fd = s, .events = events };
	int rc = poll(&p, 1, timeout_ms);
	return rc > 0 ? 1 : rc;
}

static void sock_peer_name(const struct sockaddr_storage *a, char *buf, size_t cap)
{
	char host[64], serv[16];
	socklen_t len = a->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
	                                         : sizeof(struct sockaddr_in);
	if (getnameinfo((const struct sockaddr *)a, len, host, sizeof(host), serv, sizeof(serv),
	                NI_NUMERICHOST | NI_NUMERICSERV) != 0)
		snprintf(buf, cap, "?");
	else
		snprintf(buf, cap, a->ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, serv);
}

/* The event thread's wake-up channel: a non-blocking pipe. */
static bool wake_open(sock_t fds[2])
{
#if defined(__linux__) || defined(__FreeBSD__)
	return pipe2(fds, O_CLOEXEC | O_NONBLOCK) == 0;
#else
	if (pipe(fds) != 0)
		return false;
	sock_flags(fds[0]);
	sock_flags(fds[1]);
	return true;
#endif
}

static void wake_signal(sock_t w)
{
	static const uint8_t b = 1;
	/* Full pipe: a wake-up is pending anyway. */
	(void)!write(w, &b, 1);
}

static void wake_drain(sock_t r)
{
	uint8_t buf[64];
	while (read(r, buf, sizeof(buf)) > 0)
		;
}
#endif /* POSIX */

/* ---- state -------------------------------------------------------------------------- */

struct vpcd_priv;

/*
 * One reader: its listening socket and the card's connection.
 *
 * Who touches card_sock (all under vp->lock, never held across I/O):
 * - The event thread accepts it and, while no exchange runs, watches it for the card's
 *   departure; it is the only one that closes it (after stop(), close() does), so a poll()
 *   in progress never sees the descriptor freed or its number reused.
 * - An exchange (power_on, transmit, ...) marks the slot busy, then reads and writes the
 *   socket on the calling thread without the lock. The event thread leaves a busy socket
 *   out of its poll set, so it never reads or peeks while a frame is half read; an
 *   exchange that ends after the event thread skipped its socket wakes it (need_wake).
 * - A card that must go (EOF, malformed frame, timeout, cancel) is shut down at once
 *   (the card sees the close, the core gets the removal); the event thread closes it.
 * - A new card is first the event thread's alone (atr_wait): it sends power on and GET
 *   ATR at accept and gathers the answer from its poll loop, non-blocking, until the ATR
 *   is whole (the card is then reported inserted, the ATR kept for the core's first
 *   power-up) or ATR_TIMEOUT_MS passed, or the card left (then it is dropped unseen).
 *   Exchanges refuse such a card (it is not inserted yet).
 */
struct slot {
	struct vpcd_priv *vp;
	uint16_t port;
	calais_reader *r; /* NULL before publish and from close() on */
	bool gone;        /* close() ran while the event thread still runs */
	sock_t listen_sock;
	uint64_t retry_at; /* next bind attempt while listen_sock is BAD_SOCK */
	unsigned backoff_ms;
	bool bind_logged;
	sock_t card_sock;
	bool busy, dropping, need_wake, cancelled;
	/* The ATR read at insertion (event thread): atr_wait until it is whole; then
	 * atr_fresh until the first cold power-up takes it (no power-off came between). */
	bool atr_wait, atr_fresh;
	uint64_t atr_deadline;
	uint8_t atr_buf[2 + MAX_ATR_SIZE];
	size_t atr_got;
	char peer[80];
};

struct vpcd_priv {
	calais_backend_instance *bi;
	calais__mutex_t lock; /* slots; taken before mgr.lock (card events), never across I/O */
	struct sockaddr_storage addr;
	socklen_t addr_len;
	char host[64];
	unsigned n_slots;
	struct slot slots[MAX_READERS];
	sock_t wake[2];
	calais__thread_t thread;
	bool thread_running;
	bool stop;
};

struct vpcd_reader {
	struct slot *s;
};

static const char *rname(const struct slot *s)
{
	const char *n = s->r ? calais_reader_name(s->r) : NULL;
	return n ? n : "Virtual PCD";
}

/* vp->lock held. */
static void wake(struct vpcd_priv *vp)
{
	wake_signal(vp->wake[1]);
}

/* The card leaves: its connection is ended now and the core told; the event thread frees
 * the socket. vp->lock held, no exchange running on it. */
static void drop_card(struct slot *s)
{
	if (s->card_sock == BAD_SOCK || s->dropping)
		return;
	s->dropping = true;
	sock_shutdown(s->card_sock);
	if (s->r)
		calais_reader_card_event(s->r, false);
	wake(s->vp);
}

/* Frees a dropped card's socket. vp->lock held; event thread (or after stop()). */
static void reap(struct slot *s)
{
	if (s->card_sock != BAD_SOCK && s->dropping && !s->busy) {
		sock_close(s->card_sock);
		s->card_sock = BAD_SOCK;
		s->dropping = false;
	}
}

/* ---- configuration ---------------------------------------------------------------- */

static bool parse_port(const char *p, unsigned long *out)
{
	char *end;
	if (!*p || *p < '0' || *p > '9')
		return false;
	unsigned long v = strtoul(p, &end, 10);
	if (*end || v == 0 || v > 65535)
		return false;
	*out = v;
	return true;
}

LONG calais__vpcd_parse(const char *spec, const char *readers, char *host, size_t cap,
                        unsigned long *port, unsigned *n_slots)
{
	snprintf(host, cap, "%s", DEFAULT_HOST);
	*port = DEFAULT_PORT;
	if (spec && *spec) {
		const char *h = spec, *p = NULL;
		size_t hl;
		if (spec[0] == '[') {
			const char *rb = strchr(spec, ']');
			if (!rb || (rb[1] && rb[1] != ':'))
				goto bad;
			h = spec + 1;
			hl = (size_t)(rb - h);
			p = rb[1] ? rb + 2 : NULL;
		} else {
			const char *c = strchr(spec, ':');
			if (c && strchr(c + 1, ':'))
				goto bad; /* an IPv6 address needs its brackets */
			hl = c ? (size_t)(c - spec) : strlen(spec);
			p = c ? c + 1 : NULL;
		}
		if (hl >= cap)
			goto bad;
		if (hl) {
			memcpy(host, h, hl);
			host[hl] = 0;
		}
		if (p && !parse_port(p, port))
			goto bad;
	}

	*n_slots = DEFAULT_READERS;
	if (readers && *readers) {
		char *end;
		unsigned long v = strtoul(readers, &end, 10);
		if (*end || v < 1 || v > MAX_READERS)
			vpcd_log(CALAIS_LOG_WARNING,
			         "CALAIS_VPCD_READERS=%s is not a reader count (1 to %u); %u "
			         "readers",
			         readers, MAX_READERS, DEFAULT_READERS);
		else
			*n_slots = (unsigned)v;
	}
	if (*port + *n_slots - 1 > 65535) {
		vpcd_log(CALAIS_LOG_ERROR, "ports %lu to %lu: beyond 65535", *port,
		         *port + *n_slots - 1);
		return SCARD_E_INVALID_VALUE;
	}
	return SCARD_S_SUCCESS;
bad:
	vpcd_log(CALAIS_LOG_ERROR, "CALAIS_VPCD=%s is not host:port; the backend is off", spec);
	return SCARD_E_INVALID_VALUE;
}

/* CALAIS_VPCD and CALAIS_VPCD_READERS, then the host's address. */
static LONG parse_config(struct vpcd_priv *vp, unsigned long *port)
{
	LONG rv = calais__vpcd_parse(calais__getenv("CALAIS_VPCD"), calais__getenv("CALAIS_VPCD_READERS"),
	                             vp->host, sizeof(vp->host), port, &vp->n_slots);
	if (rv != SCARD_S_SUCCESS)
		return rv;

	struct addrinfo hints = { .ai_flags = AI_PASSIVE, .ai_socktype = SOCK_STREAM };
	struct addrinfo *res = NULL;
	int g = getaddrinfo(vp->host, NULL, &hints, &res);
	/* IPv4 first for a name with both ("localhost"): vicc and vcard connect there. */
	const struct addrinfo *ai = NULL;
	for (const struct addrinfo *i = g == 0 ? res : NULL; i; i = i->ai_next)
		if ((i->ai_family == AF_INET || i->ai_family == AF_INET6) &&
		    i->ai_addrlen <= sizeof(vp->addr) &&
		    (!ai || (ai->ai_family != AF_INET && i->ai_family == AF_INET)))
			ai = i;
	if (!ai) {
		vpcd_log(CALAIS_LOG_ERROR, "CALAIS_VPCD: cannot resolve \"%s\": %s", vp->host,
		         g ? gai_strerror(g) : "no IP address");
		if (res)
			freeaddrinfo(res);
		return SCARD_E_INVALID_VALUE;
	}
	memcpy(&vp->addr, ai->ai_addr, ai->ai_addrlen);
	vp->addr_len = (socklen_t)ai->ai_addrlen;
	freeaddrinfo(res);
	return SCARD_S_SUCCESS;
}

/* ---- the event thread --------------------------------------------------------------- */

/* Opens the slot's listening socket, or schedules the next attempt. vp->lock held. */
static void try_listen(struct slot *s, uint64_t now)
{
	int err = 0;
	s->listen_sock = sock_listen(&s->vp->addr, s->vp->addr_len, s->port, &err);
	if (s->listen_sock != BAD_SOCK) {
		if (s->bind_logged)
			vpcd_log(CALAIS_LOG_INFO, "listening on %s port %u at last",
			         s->vp->host, s->port);
		else
			vpcd_log(CALAIS_LOG_DEBUG, "listening on %s port %u", s->vp->host, s->port);
		s->bind_logged = false;
		s->backoff_ms = BACKOFF_MIN_MS;
		return;
	}
	if (!s->bind_logged)
		vpcd_log(CALAIS_LOG_WARNING,
		         "cannot listen on %s port %u (%s); the reader stays empty, retrying",
		         s->vp->host, s->port, strerror(err));
	s->bind_logged = true;
	if (!s->backoff_ms)
		s->backoff_ms = BACKOFF_MIN_MS;
	s->retry_at = now + s->backoff_ms;
	s->backoff_ms = s->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : s->backoff_ms * 2;
}

/* Forgets a card never reported to the core (its ATR did not come): closed at once, so
 * the card sees it. vp->lock held; event thread; no exchange can run on it. */
static void discard_card(struct slot *s)
{
	sock_close(s->card_sock);
	s->card_sock = BAD_SOCK;
	s->atr_wait = s->atr_fresh = false;
	s->atr_got = 0;
}

/* Power on and GET ATR, sent to a card just accepted; the answer is gathered by
 * read_atr() from the poll loop. A fresh socket's buffer always takes the 6 bytes.
 * vp->lock held; event thread. */
static void start_atr(struct slot *s)
{
	static const uint8_t cmd[6] = { 0, 1, CTRL_ON, 0, 1, CTRL_ATR };
	struct chunk c = { cmd, sizeof(cmd) };
	long k = sock_sendv(s->card_sock, &c, 1);
	if (k != (long)sizeof(cmd)) {
		vpcd_log(CALAIS_LOG_WARNING, "\"%s\": card from %s: cannot send power on (%s); "
		         "dropped", rname(s), s->peer, k < 0 ? strerror(sock_errno()) : "short");
		discard_card(s);
		return;
	}
	s->atr_wait = true;
	s->atr_fresh = false;
	s->atr_got = 0;
	s->atr_deadline = calais__now_ms() + ATR_TIMEOUT_MS;
}

/* Reads what the new card has sent of its ATR, without waiting; once it is whole the card
 * is reported inserted. A card that leaves or breaks the protocol first is dropped unseen.
 * vp->lock held; event thread. */
static void read_atr(struct slot *s)
{
	for (;;) {
		size_t need = 2;
		if (s->atr_got >= 2) {
			size_t n = (size_t)s->atr_buf[0] << 8 | s->atr_buf[1];
			if (n == 0 || n > MAX_ATR_SIZE) {
				vpcd_log(CALAIS_LOG_WARNING, "\"%s\": card from %s: %s; dropped",
				         rname(s), s->peer,
				         n ? "ATR longer than 33 bytes" : "message of length 0");
				discard_card(s);
				return;
			}
			need = 2 + n;
		}
		if (s->atr_got == need)
			break;
		/* Only this message: anything after it stays for the first exchange, which
		 * then finds data nobody asked for. */
		long k = sock_recv(s->card_sock, s->atr_buf + s->atr_got, need - s->atr_got, false);
		if (k > 0) {
			s->atr_got += (size_t)k;
			sock_quickack(s->card_sock);
			continue;
		}
		int err = k < 0 ? sock_errno() : 0;
		if (k < 0 && sock_again(err))
			return;
		if (k == 0 || sock_gone(err))
			vpcd_log(CALAIS_LOG_INFO, "\"%s\": card from %s left before its ATR",
			         rname(s), s->peer);
		else
			vpcd_log(CALAIS_LOG_WARNING, "\"%s\": card connection error (%s); dropped",
			         rname(s), strerror(err));
		discard_card(s);
		return;
	}
	s->atr_wait = false;
	s->atr_fresh = true;
	vpcd_log(CALAIS_LOG_DEBUG, "\"%s\": %zu-byte ATR", rname(s), s->atr_got - 2);
	calais_reader_card_event(s->r, true);
}

/* Takes the cards waiting on a listening socket: the first is powered up (start_atr),
 * any other while one is in is refused. vp->lock held. */
static void accept_cards(struct slot *s)
{
	for (;;) {
		struct sockaddr_storage peer;
		int err = 0;
		sock_t c = sock_accept(s->listen_sock, &peer, &err);
		if (c == BAD_SOCK) {
			if (!sock_again(err)) {
				/* Out of descriptors, say: the pending connection would make
				 * poll() spin, so the listener goes and comes back later. */
				vpcd_log(CALAIS_LOG_WARNING,
				         "port %u: accept: %s; listening again later", s->port,
				         strerror(err));
				sock_close(s->listen_sock);
				s->listen_sock = BAD_SOCK;
				s->backoff_ms = BACKOFF_MIN_MS;
				s->retry_at = calais__now_ms() + BACKOFF_MIN_MS;
			}
			return;
		}
		char who[sizeof(s->peer)];
		sock_peer_name(&peer, who, sizeof(who));
		reap(s);
		if (!s->r) {
			sock_close(c); /* publish failed: the manager is stopping */
			continue;
		}
		if (s->card_sock != BAD_SOCK) {
			/* One card per reader, as in vpcd; the first one is left alone. */
			vpcd_log(CALAIS_LOG_WARNING,
			         "\"%s\": a card from %s is in already; connection from %s refused",
			         rname(s), s->peer, who);
			sock_close(c);
			continue;
		}
		sock_tune(c);
		sock_quickack(c);
		s->card_sock = c;
		snprintf(s->peer, sizeof(s->peer), "%s", who);
		vpcd_log(CALAIS_LOG_INFO, "\"%s\": card connected from %s", rname(s), who);
		start_atr(s);
	}
}

/* The idle card's socket reported something: the card left, or sent what nobody asked
 * for (the protocol has no such message; reading it as the next answer would hand an
 * application the wrong bytes). vp->lock held and no exchange runs, so peeking is safe. */
static void check_idle_card(struct slot *s, short revents)
{
	uint8_t b;
	long k = sock_recv(s->card_sock, &b, 1, true);
	int err = k < 0 ? sock_errno() : 0;
	if (k < 0 && sock_again(err) && !(revents & (POLLERR | POLLHUP)))
		return;
	if (k == 0 || (k < 0 && (sock_again(err) || sock_gone(err))))
		vpcd_log(CALAIS_LOG_INFO, "\"%s\": card from %s disconnected", rname(s), s->peer);
	else if (k > 0)
		vpcd_log(CALAIS_LOG_WARNING, "\"%s\": card from %s sent data unasked; dropped",
		         rname(s), s->peer);
	else
		vpcd_log(CALAIS_LOG_WARNING, "\"%s\": card connection error (%s); dropped",
		         rname(s), strerror(err));
	drop_card(s);
	reap(s);
}

enum { PF_WAKE, PF_LISTEN, PF_CARD, PF_ATR };

static void *event_main(void *arg)
{
	struct vpcd_priv *vp = arg;
	struct pollfd pf[1 + 2 * MAX_READERS];
	struct slot *who[1 + 2 * MAX_READERS];
	int kind[1 + 2 * MAX_READERS];

	calais__mutex_lock(&vp->lock);
	while (!vp->stop) {
		uint64_t now = calais__now_ms();
		uint64_t next = UINT64_MAX;
		nfds_t n = 0;
		pf[n] = (struct pollfd){ .fd = vp->wake[0], .events = POLLIN };
		kind[n++] = PF_WAKE;
		for (unsigned i = 0; i < vp->n_slots; i++) {
			struct slot *s = &vp->slots[i];
			if (s->gone) {
				/* close() ran while we run: the sockets go here, where nobody
				 * polls them any more. */
				sock_close(s->listen_sock);
				sock_close(s->card_sock);
				s->listen_sock = s->card_sock = BAD_SOCK;
				continue;
			}
			reap(s);
			if (s->listen_sock == BAD_SOCK && now >= s->retry_at)
				try_listen(s, now);
			if (s->listen_sock != BAD_SOCK) {
				pf[n] = (struct pollfd){ .fd = s->listen_sock, .events = POLLIN };
				who[n] = s;
				kind[n++] = PF_LISTEN;
			} else if (s->retry_at < next) {
				next = s->retry_at;
			}
			if (s->card_sock != BAD_SOCK && s->atr_wait && now >= s->atr_deadline) {
				vpcd_log(CALAIS_LOG_WARNING,
				         "\"%s\": card from %s did not answer GET ATR in %u ms; "
				         "dropped",
				         rname(s), s->peer, ATR_TIMEOUT_MS);
				discard_card(s);
			}
			if (s->card_sock != BAD_SOCK && s->atr_wait) {
				pf[n] = (struct pollfd){ .fd = s->card_sock, .events = POLLIN };
				who[n] = s;
				kind[n++] = PF_ATR;
				if (s->atr_deadline < next)
					next = s->atr_deadline;
			} else if (s->card_sock != BAD_SOCK && !s->dropping) {
				if (s->busy) {
					s->need_wake = true;
				} else {
					pf[n] = (struct pollfd){ .fd = s->card_sock,
					                         .events = WATCH_EVENTS };
					who[n] = s;
					kind[n++] = PF_CARD;
				}
			}
		}
		int timeout = -1;
		if (next != UINT64_MAX) {
			uint64_t d = next > now ? next - now : 0;
			timeout = d > INT_MAX ? INT_MAX : (int)d;
		}
		calais__mutex_unlock(&vp->lock);
		int rc = poll(pf, n, timeout);
		calais__mutex_lock(&vp->lock);
		if (rc <= 0)
			continue;
		for (nfds_t i = 0; i < n && !vp->stop; i++) {
			if (!pf[i].revents)
				continue;
			struct slot *s = who[i];
			switch (kind[i]) {
			case PF_WAKE:
				wake_drain(vp->wake[0]);
				break;
			case PF_LISTEN:
				if (!s->gone && s->listen_sock == pf[i].fd)
					accept_cards(s);
				break;
			case PF_CARD:
				/* An exchange may have begun since poll() returned. */
				if (!s->gone && s->card_sock == pf[i].fd && !s->busy &&
				    !s->dropping)
					check_idle_card(s, pf[i].revents);
				break;
			case PF_ATR:
				if (!s->gone && s->card_sock == pf[i].fd && s->atr_wait)
					read_atr(s);
				break;
			}
		}
	}
	calais__mutex_unlock(&vp->lock);
	return NULL;
}

/* ---- exchanges ---------------------------------------------------------------------- */

enum io { IO_OK, IO_EOF, IO_PROTO, IO_TIMEOUT, IO_ERR };

/* One exchange on the calling thread. */
struct xfer {
	struct slot *s;
	sock_t fd;
	uint64_t deadline;
	const char *why; /* what went wrong, for the log */
	int err;
};

/* Claims the card's socket for an exchange, bounded by timeout_ms as a whole. */
static LONG begin_io(struct slot *s, struct xfer *x, uint32_t timeout_ms)
{
	struct vpcd_priv *vp = s->vp;
	LONG rv = SCARD_S_SUCCESS;
	*x = (struct xfer){ .s = s, .fd = BAD_SOCK, .deadline = calais__now_ms() + timeout_ms };
	calais__mutex_lock(&vp->lock);
	/* A cancel that came after the last call returned was meant for that one. From here
	 * on busy is set under the same lock, so a cancel for this call finds it. */
	s->cancelled = false;
	if (s->card_sock == BAD_SOCK || s->dropping || s->gone || s->atr_wait)
		rv = SCARD_E_NO_SMARTCARD;
	else
		s->busy = true, x->fd = s->card_sock;
	calais__mutex_unlock(&vp->lock);
	return rv;
}

/* Gives the socket back and turns the outcome into a PC/SC code. Any failure drops the
 * card: the stream may be out of step (a late answer would be taken for the next one). */
static LONG end_io(struct xfer *x, enum io st)
{
	struct slot *s = x->s;
	struct vpcd_priv *vp = s->vp;
	LONG rv;
	calais__mutex_lock(&vp->lock);
	s->busy = false;
	if (st != IO_OK && s->cancelled) {
		rv = SCARD_E_CANCELLED;
		vpcd_log(CALAIS_LOG_DEBUG, "\"%s\": exchange cancelled; card dropped", rname(s));
	} else {
		switch (st) {
		case IO_OK:
			rv = SCARD_S_SUCCESS;
			break;
		case IO_EOF:
			rv = SCARD_W_REMOVED_CARD;
			vpcd_log(CALAIS_LOG_INFO, "\"%s\": card from %s disconnected%s", rname(s),
			         s->peer, x->why ? x->why : "");
			break;
		case IO_PROTO:
			rv = SCARD_F_COMM_ERROR;
			vpcd_log(CALAIS_LOG_WARNING, "\"%s\": card from %s: %s; dropped", rname(s),
			         s->peer, x->why);
			break;
		case IO_TIMEOUT:
			rv = SCARD_E_TIMEOUT;
			vpcd_log(CALAIS_LOG_WARNING,
			         "\"%s\": card from %s did not answer %s; dropped", rname(s),
			         s->peer, x->why ? x->why : "in time");
			break;
		default:
			rv = SCARD_F_COMM_ERROR;
			vpcd_log(CALAIS_LOG_WARNING, "\"%s\": card from %s: %s; dropped", rname(s),
			         s->peer, strerror(x->err));
			break;
		}
	}
	if (st != IO_OK)
		drop_card(s);
	if (s->need_wake) {
		s->need_wake = false;
		wake(vp);
	}
	calais__mutex_unlock(&vp->lock);
	return rv;
}

/* Waits until the socket is ready or the deadline passes. */
static enum io wait_ready(struct xfer *x, short events)
{
	for (;;) {
		uint64_t now = calais__now_ms();
		if (now >= x->deadline)
			return IO_TIMEOUT;
		uint64_t left = x->deadline - now;
		int rc = sock_wait(x->fd, events, left > INT_MAX ? INT_MAX : (int)left);
		if (rc > 0)
			return IO_OK; /* ready, or hung up: the next call says which */
		if (rc < 0 && !sock_again(sock_errno())) {
			x->err = sock_errno();
			return IO_ERR;
		}
	}
}

/* A socket error: the card went away, or a local failure. */
static enum io io_error(struct xfer *x, int err)
{
	x->err = err;
	return sock_gone(err) ? IO_EOF : IO_ERR;
}

/* The card left between exchanges, or sent something unasked. */
static enum io check_quiet(struct xfer *x)
{
	uint8_t b;
	long k = sock_recv(x->fd, &b, 1, true);
	if (k == 0)
		return IO_EOF;
	if (k > 0) {
		x->why = "data sent unasked";
		return IO_PROTO;
	}
	int err = sock_errno();
	return sock_again(err) ? IO_OK : io_error(x, err);
}

/* Sends the chunks whole, in as few writes as the socket takes. */
static enum io send_chunks(struct xfer *x, struct chunk *c, int nc)
{
	int i = 0;
	while (i < nc) {
		long k = sock_sendv(x->fd, c + i, nc - i);
		if (k < 0) {
			int err = sock_errno();
			if (!sock_again(err))
				return io_error(x, err);
			enum io st = wait_ready(x, POLLOUT);
			if (st != IO_OK)
				return st;
			continue;
		}
		size_t done = (size_t)k;
		while (i < nc && done >= c[i].n)
			done -= c[i++].n;
		if (i < nc) {
			c[i].p += done;
			c[i].n -= done;
		}
	}
	return IO_OK;
}

/* One message: its length and payload leave in one write, so one segment. */
static enum io send_msg(struct xfer *x, const uint8_t *payload, size_t n)
{
	uint8_t hdr[2] = { (uint8_t)(n >> 8), (uint8_t)n };
	struct chunk c[2] = { { hdr, 2 }, { payload, n } };
	return send_chunks(x, c, 2);
}

/* Control messages, already framed (3 bytes each). */
static enum io send_ctrl(struct xfer *x, const uint8_t *b, size_t n)
{
	struct chunk c = { b, n };
	return send_chunks(x, &c, 1);
}

/* Receives exactly n bytes (buf NULL: discards them). started: part of the message came
 * already, so an EOF here cuts it. */
static enum io recv_exact(struct xfer *x, uint8_t *buf, size_t n, bool started)
{
	uint8_t scratch[512];
	size_t got = 0;
	while (got < n) {
		size_t want = n - got;
		uint8_t *to = buf ? buf + got : scratch;
		if (!buf && want > sizeof(scratch))
			want = sizeof(scratch);
		long k = sock_recv(x->fd, to, want, false);
		if (k > 0) {
			got += (size_t)k;
			sock_quickack(x->fd);
			continue;
		}
		if (k == 0) {
			if (started || got)
				x->why = " in the middle of a message";
			return IO_EOF;
		}
		int err = sock_errno();
		if (!sock_again(err))
			return io_error(x, err);
		enum io st = wait_ready(x, POLLIN);
		if (st != IO_OK)
			return st;
	}
	return IO_OK;
}

/* Receives one message into buf (cap bytes). *len gets its length. A longer message is
 * read and discarded when discard_long (*len then says how much room it needed), else
 * it breaks the protocol. */
static enum io recv_msg(struct xfer *x, uint8_t *buf, size_t cap, size_t *len, bool discard_long)
{
	uint8_t hdr[2];
	enum io st = recv_exact(x, hdr, 2, false);
	if (st != IO_OK)
		return st;
	size_t n = (size_t)hdr[0] << 8 | hdr[1];
	*len = n;
	if (n == 0) {
		x->why = "message of length 0";
		return IO_PROTO;
	}
	if (n > cap && !discard_long) {
		x->why = "answer longer than the protocol allows";
		return IO_PROTO;
	}
	return recv_exact(x, n > cap ? NULL : buf, n, true);
}

/* ---- the backend table -------------------------------------------------------------- */

static struct slot *slot_of(calais_reader *r)
{
	return ((struct vpcd_reader *)calais_reader_priv(r))->s;
}

static LONG vpcd_power_on(calais_reader *r, bool warm, uint8_t *atr, size_t *atr_len)
{
	struct slot *s = slot_of(r);
	struct xfer x;
	LONG rv = begin_io(s, &x, ATR_TIMEOUT_MS);
	if (rv != SCARD_S_SUCCESS)
		return rv;
	/* The event thread powered the card and read its ATR at insertion: the first cold
	 * power-up after it takes that ATR, with no second round trip. */
	calais__mutex_lock(&s->vp->lock);
	size_t fresh = !warm && s->atr_fresh ? s->atr_got - 2 : 0;
	if (fresh)
		memcpy(atr, s->atr_buf + 2, fresh);
	s->atr_fresh = false;
	calais__mutex_unlock(&s->vp->lock);
	if (fresh) {
		end_io(&x, IO_OK);
		*atr_len = fresh;
		return SCARD_S_SUCCESS;
	}
	/* Power on (or reset) and get ATR leave together; only the second is answered. */
	const uint8_t cmd[6] = { 0, 1, warm ? CTRL_RESET : CTRL_ON, 0, 1, CTRL_ATR };
	enum io st = check_quiet(&x);
	if (st == IO_OK)
		st = send_ctrl(&x, cmd, sizeof(cmd));
	size_t n = 0;
	if (st == IO_OK) {
		st = recv_msg(&x, atr, MAX_ATR_SIZE, &n, false);
		if (st == IO_PROTO && n > MAX_ATR_SIZE)
			x.why = "ATR longer than 33 bytes";
		if (st == IO_TIMEOUT)
			x.why = "GET ATR";
	}
	rv = end_io(&x, st);
	if (rv == SCARD_S_SUCCESS) {
		*atr_len = n;
		vpcd_log(CALAIS_LOG_DEBUG, "\"%s\": %s, %zu-byte ATR", rname(s),
		         warm ? "reset" : "powered on", n);
	}
	return rv;
}

static LONG vpcd_power_off(calais_reader *r)
{
	struct slot *s = slot_of(r);
	struct xfer x;
	LONG rv = begin_io(s, &x, ATR_TIMEOUT_MS);
	if (rv != SCARD_S_SUCCESS)
		return rv;
	calais__mutex_lock(&s->vp->lock);
	s->atr_fresh = false; /* the next power-up is a real one */
	calais__mutex_unlock(&s->vp->lock);
	const uint8_t cmd[3] = { 0, 1, CTRL_OFF };
	enum io st = check_quiet(&x);
	if (st == IO_OK)
		st = send_ctrl(&x, cmd, sizeof(cmd));
	return end_io(&x, st);
}

static LONG vpcd_transmit(calais_reader *r, uint32_t protocol, const uint8_t *tx, size_t tx_len,
                          uint8_t *rx, size_t *rx_len, uint32_t timeout_ms)
{
	struct slot *s = slot_of(r);
	(void)protocol;
	/* A 1-byte payload would be read as a control message; the length field holds 65535
	 * at most. */
	if (tx_len < 2 || tx_len > MAX_MSG) {
		vpcd_log(CALAIS_LOG_DEBUG,
		         "\"%s\": a %zu-byte command cannot be sent to a vpcd card", rname(s),
		         tx_len);
		return SCARD_E_INVALID_PARAMETER;
	}
	struct xfer x;
	/* The whole exchange (send, the card's time, the answer) within the core's limit. */
	LONG rv = begin_io(s, &x, timeout_ms ? timeout_ms : APDU_TIMEOUT_MS);
	if (rv != SCARD_S_SUCCESS)
		return rv == SCARD_E_NO_SMARTCARD ? SCARD_W_REMOVED_CARD : rv;
	size_t n = 0;
	enum io st = check_quiet(&x);
	if (st == IO_OK)
		st = send_msg(&x, tx, tx_len);
	if (st == IO_OK)
		st = recv_msg(&x, rx, *rx_len, &n, true);
	if (st == IO_TIMEOUT)
		x.why = "the command";
	rv = end_io(&x, st);
	if (rv != SCARD_S_SUCCESS)
		return rv;
	if (n > *rx_len) {
		/* Read whole and thrown away: the next exchange starts in step. */
		vpcd_log(CALAIS_LOG_DEBUG, "\"%s\": %zu-byte answer, room for %zu", rname(s), n,
		         *rx_len);
		*rx_len = n;
		return SCARD_E_INSUFFICIENT_BUFFER;
	}
	*rx_len = n;
	return SCARD_S_SUCCESS;
}

static LONG vpcd_slot_status(calais_reader *r, bool *present)
{
	struct slot *s = slot_of(r);
	calais__mutex_lock(&s->vp->lock);
	*present = s->card_sock != BAD_SOCK && !s->dropping && !s->atr_wait;
	calais__mutex_unlock(&s->vp->lock);
	return SCARD_S_SUCCESS;
}

/* The exchange in progress ends now: shutting the socket down wakes its poll() at once
 * (the card goes, as after any broken exchange: the stream is out of step). Any thread,
 * never blocks; a cancel with no exchange running is forgotten by the next call. */
static void vpcd_cancel(calais_reader *r)
{
	struct slot *s = slot_of(r);
	calais__mutex_lock(&s->vp->lock);
	s->cancelled = true;
	if (s->busy && s->card_sock != BAD_SOCK)
		sock_shutdown(s->card_sock);
	calais__mutex_unlock(&s->vp->lock);
}

static void vpcd_close(calais_reader *r)
{
	struct slot *s = slot_of(r);
	struct vpcd_priv *vp = s->vp;
	calais__mutex_lock(&vp->lock);
	s->r = NULL;
	if (vp->thread_running) {
		/* Not at shutdown: the event thread may be polling them; it closes them. */
		s->gone = true;
		if (s->card_sock != BAD_SOCK)
			sock_shutdown(s->card_sock);
		wake(vp);
	} else {
		sock_close(s->listen_sock);
		sock_close(s->card_sock);
		s->listen_sock = s->card_sock = BAD_SOCK;
	}
	calais__mutex_unlock(&vp->lock);
}

static void close_all(struct vpcd_priv *vp)
{
	for (unsigned i = 0; i < MAX_READERS; i++) {
		sock_close(vp->slots[i].listen_sock);
		sock_close(vp->slots[i].card_sock);
		vp->slots[i].listen_sock = vp->slots[i].card_sock = BAD_SOCK;
	}
	sock_close(vp->wake[0]);
	sock_close(vp->wake[1]);
	vp->wake[0] = vp->wake[1] = BAD_SOCK;
}

static LONG vpcd_init(calais_backend_instance *bi)
{
	struct vpcd_priv *vp = calais_backend_priv(bi);
	vp->bi = bi;
	vp->wake[0] = vp->wake[1] = BAD_SOCK;
	for (unsigned i = 0; i < MAX_READERS; i++)
		vp->slots[i].listen_sock = vp->slots[i].card_sock = BAD_SOCK;
	unsigned long port;
	LONG rv = parse_config(vp, &port);
	if (rv != SCARD_S_SUCCESS)
		return rv;
	if (!wake_open(vp->wake)) {
		vpcd_log(CALAIS_LOG_ERROR, "cannot make a pipe: %s", strerror(errno));
		return SCARD_E_NO_MEMORY;
	}
	calais__mutex_init(&vp->lock);

	/* Listening before init returns, so a card started right after calais_start()
	 * finds the port (it is accepted once the thread runs). */
	uint64_t now = calais__now_ms();
	for (unsigned i = 0; i < vp->n_slots; i++) {
		struct slot *s = &vp->slots[i];
		s->vp = vp;
		s->port = (uint16_t)(port + i);
		try_listen(s, now);
	}
	/* The readers are published under our lock, so the event thread, blocked on it
	 * until then, accepts a card only once its reader is in place. */
	calais__mutex_lock(&vp->lock);
	if (calais__thread_create(&vp->thread, event_main, vp) != 0) {
		calais__mutex_unlock(&vp->lock);
		vpcd_log(CALAIS_LOG_ERROR, "cannot start the event thread");
		close_all(vp);
		calais__mutex_destroy(&vp->lock);
		return SCARD_E_NO_MEMORY;
	}
	vp->thread_running = true;
	for (unsigned i = 0; i < vp->n_slots; i++) {
		struct slot *s = &vp->slots[i];
		struct calais_reader_desc d = {
			/* One device with a slot per port: "Virtual PCD 00 00", "... 00 01". */
			.name = "Virtual PCD",
			.vendor = "Virtual Smart Card Architecture",
			/* Channel type 0x00F1 (vendor-defined: a TCP virtual reader), the
			 * port as channel number. */
			.channel_id = 0x00F10000u | s->port,
			.max_input = MAX_MSG,
			.slot = i,
			.protocols = SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1 | SCARD_PROTOCOL_RAW,
		};
		calais_reader *r;
		if (calais_reader_new(bi, &d, &r) != SCARD_S_SUCCESS)
			continue;
		((struct vpcd_reader *)calais_reader_priv(r))->s = s;
		s->r = r;
		if (calais_reader_publish(r, false) != SCARD_S_SUCCESS)
			s->r = NULL; /* freed by publish */
	}
	calais__mutex_unlock(&vp->lock);
	vpcd_log(CALAIS_LOG_INFO, "%u readers on %s ports %lu to %lu", vp->n_slots, vp->host, port,
	         port + vp->n_slots - 1);
	/* Cards that keep trying to connect (vicc and the Android app retry, as does
	 * tests/peers/vcard) get in before start-up returns, so a program's first listing
	 * shows them, as it would with a long-running pcscd. Bounded, and over as soon as
	 * every reader has its card. A card counts once its ATR is in: a mute one is not
	 * reported by then, so the core's start-up has no power-up of ours to wait for. */
	uint64_t until = calais__now_ms() + STARTUP_GRACE_MS;
	while (calais__now_ms() < until) {
		unsigned cards = 0;
		calais__mutex_lock(&vp->lock);
		for (unsigned i = 0; i < vp->n_slots; i++)
			cards += vp->slots[i].card_sock != BAD_SOCK && !vp->slots[i].atr_wait;
		calais__mutex_unlock(&vp->lock);
		if (cards == vp->n_slots)
			break;
		calais__sleep_us(10000);
	}
	return SCARD_S_SUCCESS;
}

static void vpcd_stop(calais_backend_instance *bi)
{
	struct vpcd_priv *vp = calais_backend_priv(bi);
	calais__mutex_lock(&vp->lock);
	vp->stop = true;
	wake(vp);
	calais__mutex_unlock(&vp->lock);
	if (vp->thread_running)
		calais__thread_join(vp->thread);
	calais__mutex_lock(&vp->lock);
	vp->thread_running = false;
	calais__mutex_unlock(&vp->lock);
}

static void vpcd_exit(calais_backend_instance *bi)
{
	struct vpcd_priv *vp = calais_backend_priv(bi);
	close_all(vp);
	calais__mutex_destroy(&vp->lock);
}

const struct calais_backend calais__backend_vpcd = {
	.abi_version = CALAIS_BACKEND_ABI_VERSION,
	.name = "vpcd",
	.caps = CALAIS_BACKEND_CAP_CARD_EVENTS | CALAIS_BACKEND_CAP_EXTENDED,
	.instance_priv_size = sizeof(struct vpcd_priv),
	.reader_priv_size = sizeof(struct vpcd_reader),
	.init = vpcd_init,
	.stop = vpcd_stop,
	.exit = vpcd_exit,
	.close = vpcd_close,
	.power_on = vpcd_power_on,
	.power_off = vpcd_power_off,
	.transmit = vpcd_transmit,
	.slot_status = vpcd_slot_status,
	.cancel = vpcd_cancel,
};
