/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The vpcd backend through the PC/SC API, the test being the virtual card: small cards in
 * threads speaking vpcd's protocol (each can misbehave in one way), and the real fixture,
 * tests/peers/vcard.c, as a child process. Reader names and attributes, insertion and
 * removal pushed at once (latency measured), the power sequence on the wire, APDUs up to
 * the largest message, and every fault: a message of length 0, an over-long ATR, an
 * answer longer than the buffer, EOF in mid-message, data sent unasked, a card that never
 * answers, a second card on an occupied reader, a port in use at start. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <winscard.h>
#include <reader.h>
#include <calais/calais.h>

#include "backend-test.h"
#include "ports-test.h"

#ifndef VCARD_PATH
#error "VCARD_PATH: the path of tests/peers' vcard executable"
#endif

#define R0 "Virtual PCD 00 00"
#define R1 "Virtual PCD 00 01"
#define R2 "Virtual PCD 00 02"

/* vcard's default ATR; our in-test cards use it too (T=1 only). */
static const uint8_t ATR[] = { 0x3B, 0x8E, 0x01, 0x43, 0x61, 0x6C, 0x61, 0x69, 0x73,
	                       0x54, 0x65, 0x73, 0x74, 0x43, 0x61, 0x72, 0x64, 0xB8 };
static const uint8_t SELECT[] = { 0x00, 0xA4, 0x04, 0x00, 0x02, 0x3F, 0x00 };

/* The insertion and removal bound the backend promises (pcscd's vpcd polls every 400 ms). */
#define LATENCY_MS 100.0

static SCARDCONTEXT ctx;
static int port0;     /* reader i listens on port0 + i */
static int fds_start; /* descriptors open before the manager started */

/* pcsc_stringify_error() has one buffer: the two texts are taken one after the other. */

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

/* Under valgrind everything is some 20 times slower: bounds on time stretch with it. */
static double slow(void)
{
	return getenv("CALAIS_TEST_UNDER_VALGRIND") ? 20.0 : 1.0;
}

/* ---- the log: when the backend saw a card connect, and what it warned about ---------- */

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static double log_connect_ms; /* the last "card connected" line */
static char log_text[8192];   /* warnings and infos from vpcd, newest last */

static void on_log(enum calais_log_level level, const char *domain, const char *message,
                   void *user)
{
	(void)user;
	double t = now_ms();
	if (getenv("CALAIS_TEST_LOG"))
		fprintf(stderr, "[%d] %s: %s\n", (int)level, domain, message);
	if (strcmp(domain, "vpcd") != 0 || level > CALAIS_LOG_INFO)
		return;
	pthread_mutex_lock(&log_lock);
	if (strstr(message, "card connected"))
		log_connect_ms = t;
	size_t have = strlen(log_text), add = strlen(message) + 1;
	if (have + add >= sizeof(log_text)) {
		have = 0;
		log_text[0] = 0;
	}
	if (add < sizeof(log_text)) {
		memcpy(log_text + have, message, add - 1);
		log_text[have + add - 1] = '\n';
		log_text[have + add] = 0;
	}
	pthread_mutex_unlock(&log_lock);
}

/* Whether `what` was logged; waits a little for it: a line logged while the library holds
 * a lock (a reader's I/O lock, inside a backend call) reaches the callback once the lock
 * is released. */
static bool logged(const char *what)
{
	for (int i = 0; i < 200; i++) {
		pthread_mutex_lock(&log_lock);
		bool found = strstr(log_text, what) != NULL;
		pthread_mutex_unlock(&log_lock);
		if (found)
			return true;
		struct timespec ts = { 0, (long)(10e6 * slow()) };
		nanosleep(&ts, NULL);
	}
	return false;
}

static double last_connect_logged(void)
{
	pthread_mutex_lock(&log_lock);
	double t = log_connect_ms;
	pthread_mutex_unlock(&log_lock);
	return t;
}

/* ---- ports and the manager ----------------------------------------------------------- */

/* n free ports in a row from 36400 on (test_faults_vpcd uses 39300 on). */
static void pick_ports(unsigned n)
{
	port0 = bt_pick_ports(36400, 2800, n);
}

/* Open descriptors: every socket the backend opened must be closed at shutdown. */
static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		return -1;
	int n = 0;
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

/* Starts the manager with the vpcd backend on CALAIS_VPCD=vpcd and
 * CALAIS_VPCD_READERS=readers (NULL: unset), the log captured. */
static void start_env(const char *vpcd, const char *readers, enum calais_log_level level,
                      uint32_t power_down_ms)
{
	setenv("CALAIS_VPCD", vpcd, 1);
	if (readers)
		setenv("CALAIS_VPCD_READERS", readers, 1);
	else
		unsetenv("CALAIS_VPCD_READERS");
	pthread_mutex_lock(&log_lock);
	log_text[0] = 0;
	log_connect_ms = 0;
	pthread_mutex_unlock(&log_lock);

	struct calais_config cfg;
	calais_config_init(&cfg);
	cfg.backends = "vpcd";
	cfg.log_level = getenv("CALAIS_TEST_LOG") ? CALAIS_LOG_DEBUG : level;
	cfg.log_level_set = true;
	cfg.log_cb = on_log;
	cfg.power_down_delay_ms = power_down_ms;
	assert_rv(calais_start(&cfg), SCARD_S_SUCCESS);
	assert_rv(SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &ctx), SCARD_S_SUCCESS);
}

static void start_cfg(unsigned readers, uint32_t power_down_ms, bool pick)
{
	calais_shutdown();
	fds_start = count_fds();
	if (pick)
		pick_ports(readers);
	char v[64], n[16];
	snprintf(v, sizeof(v), "127.0.0.1:%d", port0);
	snprintf(n, sizeof(n), "%u", readers);
	/* Power-downs only where a test asks: they would add control messages. */
	start_env(v, n, CALAIS_LOG_INFO, power_down_ms);
}

static void start(void)
{
	start_cfg(2, UINT32_MAX, true);
}

static void stop(void)
{
	SCardReleaseContext(ctx);
	calais_shutdown();
	calais_log_set(CALAIS_LOG_NONE, NULL, NULL);
	int now = count_fds();
	cr_assert_eq(now, fds_start, "%d descriptors open after shutdown, %d before start", now,
	             fds_start);
}

/* ---- readers ------------------------------------------------------------------------- */

static unsigned list(char *buf, size_t cap)
{
	DWORD len = (DWORD)cap;
	LONG rv = SCardListReaders(ctx, NULL, buf, &len);
	if (rv == SCARD_E_NO_READERS_AVAILABLE)
		return 0;
	assert_rv(rv, SCARD_S_SUCCESS);
	unsigned n = 0;
	for (const char *p = buf; *p; p += strlen(p) + 1)
		n++;
	return n;
}

static DWORD state_now(const char *name)
{
	SCARD_READERSTATE rs = { .szReader = name, .dwCurrentState = SCARD_STATE_UNAWARE };
	assert_rv(SCardGetStatusChange(ctx, 0, &rs, 1), SCARD_S_SUCCESS);
	return rs.dwEventState & ~(DWORD)SCARD_STATE_CHANGED;
}

/* Waits up to ms for the reader to show (want) or lose (!want) bit; true when it did.
 * *seen_ms: when the waiter was woken with it. */
static bool wait_state(const char *name, DWORD bit, bool want, double ms, double *seen_ms)
{
	SCARD_READERSTATE rs = { .szReader = name, .dwCurrentState = SCARD_STATE_UNAWARE };
	double until = now_ms() + ms;
	for (;;) {
		double left = until - now_ms();
		LONG rv = SCardGetStatusChange(ctx, left > 0 ? (DWORD)left : 0, &rs, 1);
		if (seen_ms)
			*seen_ms = now_ms();
		cr_assert(rv == SCARD_S_SUCCESS || rv == SCARD_E_TIMEOUT, "%s",
		          pcsc_stringify_error(rv));
		if (rv == SCARD_S_SUCCESS && !!(rs.dwEventState & bit) == want)
			return true;
		if (rv == SCARD_E_TIMEOUT || left <= 0)
			return false;
		rs.dwCurrentState = rs.dwEventState & ~(DWORD)SCARD_STATE_CHANGED;
	}
}

static SCARDHANDLE connect_to(const char *name)
{
	SCARDHANDLE h;
	DWORD proto;
	assert_rv(SCardConnect(ctx, name, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1,
	                       &h, &proto),
	          SCARD_S_SUCCESS);
	cr_assert_eq(proto, (DWORD)SCARD_PROTOCOL_T1);
	return h;
}

static LONG xmit(SCARDHANDLE h, const uint8_t *apdu, size_t n, uint8_t *resp, DWORD *len)
{
	return SCardTransmit(h, SCARD_PCI_T1, apdu, (DWORD)n, NULL, resp, len);
}

static void select_ok(SCARDHANDLE h)
{
	uint8_t resp[258];
	DWORD rl = sizeof(resp);
	assert_rv(xmit(h, SELECT, sizeof(SELECT), resp, &rl), SCARD_S_SUCCESS);
	cr_assert(rl == 2 && resp[0] == 0x90 && resp[1] == 0x00, "SELECT: %lu bytes",
	          (unsigned long)rl);
}

/* "80 EF": n bytes from the card (byte i = i & 0xFF), then 90 00; Le short or extended. */
static void check_source(SCARDHANDLE h, size_t n)
{
	static uint8_t resp[70000];
	uint8_t apdu[7] = { 0x80, 0xEF, (uint8_t)(n >> 8), (uint8_t)n, (uint8_t)n };
	size_t len = 5;
	if (n > 255) {
		apdu[4] = 0, apdu[5] = 0, apdu[6] = 0;
		len = 7;
	}
	DWORD rl = sizeof(resp);
	assert_rv(xmit(h, apdu, len, resp, &rl), SCARD_S_SUCCESS);
	bt_assert_counting(resp, rl, n, "source");
}

/* "80 EE": the data back, then 90 00 (extended Lc above 255). */
static void check_echo(SCARDHANDLE h, size_t n)
{
	static uint8_t apdu[70000], resp[70000];
	size_t off = n > 255 ? 7 : 5;
	apdu[0] = 0x80, apdu[1] = 0xEE, apdu[2] = 0, apdu[3] = 0;
	if (n > 255)
		apdu[4] = 0, apdu[5] = (uint8_t)(n >> 8), apdu[6] = (uint8_t)n;
	else
		apdu[4] = (uint8_t)n;
	for (size_t i = 0; i < n; i++)
		apdu[off + i] = (uint8_t)(i * 7 + 3);
	DWORD rl = sizeof(resp);
	assert_rv(xmit(h, apdu, off + n, resp, &rl), SCARD_S_SUCCESS);
	cr_assert_eq(rl, n + 2, "echo of %zu: %lu bytes back", n, (unsigned long)rl);
	cr_assert_eq(memcmp(resp, apdu + off, n), 0, "echo of %zu: data differ", n);
	cr_assert(resp[n] == 0x90 && resp[n + 1] == 0x00);
}

/* ---- the in-test card ------------------------------------------------------------------ */

enum behave {
	B_NORMAL,    /* SELECT, echo (80 EE) and source (80 EF) as vcard; 6D 00 otherwise */
	B_ZERO_LEN,  /* the first APDU is answered with a message of length 0 */
	B_LONG_ATR,  /* GET ATR is answered with 40 bytes */
	B_CUT,       /* the first answer announces 10 bytes, 3 come, then the card closes */
	B_MUTE_APDU, /* the first APDU is never answered */
	B_MUTE_ATR,  /* GET ATR is never answered */
	B_UNASKED,   /* the first answer is followed by a message nobody asked for */
};

struct tcard {
	int port;
	enum behave b;
	bool retry;        /* connect until it works (up to 10 s) */
	unsigned delay_ms; /* before connecting */
	pthread_t th;
	pthread_mutex_t m;
	pthread_cond_t c;
	/* m: */
	int fd;
	double t_connect; /* just before connect() */
	bool connected, closed, done;
	unsigned apdus;
	uint8_t ctrl[64]; /* the control bytes received, in order */
	unsigned n_ctrl;
	char error[160];
	uint8_t in[65536], out[2 + 65536];
};

__attribute__((format(printf, 2, 3)))
static void tc_error(struct tcard *c, const char *fmt, ...)
{
	va_list ap;
	pthread_mutex_lock(&c->m);
	va_start(ap, fmt);
	if (!c->error[0])
		vsnprintf(c->error, sizeof(c->error), fmt, ap);
	va_end(ap);
	pthread_mutex_unlock(&c->m);
}

/* Exactly n bytes; false at EOF or error (the reader side went away). */
static bool tc_read(int fd, uint8_t *b, size_t n)
{
	size_t got = 0;
	while (got < n) {
		ssize_t k = recv(fd, b + got, n - got, 0);
		if (k > 0)
			got += (size_t)k;
		else if (k < 0 && errno == EINTR)
			continue;
		else
			return false;
	}
	return true;
}

static bool tc_send(int fd, const uint8_t *b, size_t n)
{
	while (n) {
		ssize_t k = send(fd, b, n, MSG_NOSIGNAL);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return false;
		b += k;
		n -= (size_t)k;
	}
	return true;
}

/* Frames payload (n bytes at out + 2) in c->out; returns the bytes to send. */
static size_t tc_frame(struct tcard *c, size_t n)
{
	c->out[0] = (uint8_t)(n >> 8);
	c->out[1] = (uint8_t)n;
	return n + 2;
}

/* The answer to an APDU (short encodings only), at out + 2; returns its length. */
static size_t tc_answer(struct tcard *c, const uint8_t *a, size_t n)
{
	uint8_t *r = c->out + 2;
	size_t k = 0;
	if (n >= 4 && a[0] == 0x80 && a[1] == 0xEE && n >= 5 && n >= 5u + a[4]) {
		memcpy(r, a + 5, a[4]);
		k = a[4];
	} else if (n >= 4 && a[0] == 0x80 && a[1] == 0xEF) {
		k = (size_t)a[2] << 8 | a[3];
		for (size_t i = 0; i < k; i++)
			r[i] = (uint8_t)i;
	} else if (!(n >= 4 && a[0] == 0x00 && a[1] == 0xA4)) {
		r[0] = 0x6D, r[1] = 0x00;
		return 2;
	}
	r[k] = 0x90, r[k + 1] = 0x00;
	return k + 2;
}

static int tc_connect(struct tcard *c)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)c->port),
		                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	double until = now_ms() + 10000 * slow();
	for (;;) {
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return -1;
		pthread_mutex_lock(&c->m);
		c->t_connect = now_ms();
		pthread_mutex_unlock(&c->m);
		if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0) {
			int one = 1;
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
			return fd;
		}
		close(fd);
		if (!c->retry || now_ms() > until)
			return -1;
		sleep_ms(20);
	}
}

static void *tc_main(void *arg)
{
	struct tcard *c = arg;
	if (c->delay_ms)
		sleep_ms(c->delay_ms);
	int fd = tc_connect(c);
	pthread_mutex_lock(&c->m);
	c->fd = fd;
	c->connected = fd >= 0;
	pthread_cond_broadcast(&c->c);
	pthread_mutex_unlock(&c->m);
	if (fd < 0) {
		tc_error(c, "cannot connect to port %d: %s", c->port, strerror(errno));
		goto out;
	}
	for (;;) {
		uint8_t hdr[2];
		if (!tc_read(fd, hdr, 2))
			break;
		size_t len = (size_t)hdr[0] << 8 | hdr[1];
		if (len == 0) {
			tc_error(c, "message of length 0 from the reader");
			break;
		}
		if (!tc_read(fd, c->in, len))
			break;
		if (len == 1) {
			pthread_mutex_lock(&c->m);
			if (c->n_ctrl < sizeof(c->ctrl))
				c->ctrl[c->n_ctrl++] = c->in[0];
			pthread_cond_broadcast(&c->c);
			pthread_mutex_unlock(&c->m);
			if (c->in[0] > 4 || c->in[0] == 3)
				tc_error(c, "unknown control byte %u", c->in[0]);
			if (c->in[0] != 4 || c->b == B_MUTE_ATR)
				continue;
			size_t n = sizeof(ATR);
			memcpy(c->out + 2, ATR, n);
			if (c->b == B_LONG_ATR) {
				n = 40;
				memset(c->out + 2 + sizeof(ATR), 0x11, n - sizeof(ATR));
			}
			if (!tc_send(fd, c->out, tc_frame(c, n)))
				break;
			continue;
		}
		pthread_mutex_lock(&c->m);
		unsigned nth = ++c->apdus;
		pthread_cond_broadcast(&c->c);
		pthread_mutex_unlock(&c->m);
		if (nth == 1 && c->b == B_MUTE_APDU)
			continue;
		if (nth == 1 && c->b == B_ZERO_LEN) {
			if (!tc_send(fd, c->out, tc_frame(c, 0)))
				break;
			continue;
		}
		if (nth == 1 && c->b == B_CUT) {
			const uint8_t part[] = { 0x00, 0x0A, 0x01, 0x02, 0x03 };
			tc_send(fd, part, sizeof(part));
			break;
		}
		size_t n = tc_frame(c, tc_answer(c, c->in, len));
		if (nth == 1 && c->b == B_UNASKED) {
			/* In the same write as the answer: it is there before the next command. */
			const uint8_t extra[] = { 0x00, 0x02, 0x90, 0x00 };
			memcpy(c->out + n, extra, sizeof(extra));
			n += sizeof(extra);
		}
		if (!tc_send(fd, c->out, n))
			break;
	}
out:
	pthread_mutex_lock(&c->m);
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->closed = true;
	c->done = true;
	pthread_cond_broadcast(&c->c);
	pthread_mutex_unlock(&c->m);
	return NULL;
}

static struct tcard *tcard_run(int port, enum behave b, bool retry, unsigned delay_ms)
{
	struct tcard *c = calloc(1, sizeof(*c));
	cr_assert_not_null(c);
	c->port = port;
	c->b = b;
	c->retry = retry;
	c->delay_ms = delay_ms;
	c->fd = -1;
	pthread_mutex_init(&c->m, NULL);
	pthread_cond_init(&c->c, NULL);
	cr_assert_eq(pthread_create(&c->th, NULL, tc_main, c), 0);
	return c;
}

static struct tcard *tcard(int port, enum behave b)
{
	return tcard_run(port, b, false, 0);
}

/* Waits up to ms for a condition on the card's counters. */
enum until { U_CONNECTED, U_CLOSED, U_APDUS, U_CTRL };
static bool tcard_wait(struct tcard *c, enum until what, unsigned n, double ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	long long ns = (long long)(ms * slow() * 1e6) + ts.tv_nsec;
	ts.tv_sec += (time_t)(ns / 1000000000LL);
	ts.tv_nsec = (long)(ns % 1000000000LL);
	pthread_mutex_lock(&c->m);
	bool ok;
	for (;;) {
		ok = what == U_CONNECTED ? c->connected || c->done
		   : what == U_CLOSED    ? c->closed
		   : what == U_APDUS     ? c->apdus >= n
		                         : c->n_ctrl >= n;
		if (ok || pthread_cond_timedwait(&c->c, &c->m, &ts) != 0)
			break;
	}
	if (what == U_CONNECTED)
		ok = c->connected;
	pthread_mutex_unlock(&c->m);
	return ok;
}

/* The card leaves: its end of the connection is closed now. Returns the moment. */
static double tcard_remove(struct tcard *c)
{
	pthread_mutex_lock(&c->m);
	double t = now_ms();
	if (c->fd >= 0)
		shutdown(c->fd, SHUT_RDWR);
	pthread_mutex_unlock(&c->m);
	return t;
}

/* Removes the card, waits for its thread and frees it; fails on a protocol error seen. */
static void tcard_end(struct tcard *c)
{
	tcard_remove(c);
	pthread_join(c->th, NULL);
	cr_assert_eq(c->error[0], 0, "the card saw: %s", c->error);
	pthread_cond_destroy(&c->c);
	pthread_mutex_destroy(&c->m);
	free(c);
}

static void assert_ctrl(struct tcard *c, const char *want_hex)
{
	char got[200] = "";
	pthread_mutex_lock(&c->m);
	for (unsigned i = 0; i < c->n_ctrl && strlen(got) + 4 < sizeof(got); i++)
		snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s%u", i ? " " : "",
		         c->ctrl[i]);
	pthread_mutex_unlock(&c->m);
	cr_assert_str_eq(got, want_hex, "control messages: \"%s\", want \"%s\"", got, want_hex);
}

/* ---- vcard, the real fixture ------------------------------------------------------------ */

static pid_t vcard_run_host(const char *host, int port, bool quickack)
{
	char p[16];
	snprintf(p, sizeof(p), "%d", port);
	char *argv[] = { VCARD_PATH, "-H", (char *)host, "-P", p, "--retry", "-t", "20", NULL,
		         NULL };
	if (!quickack)
		argv[8] = "--no-quickack";
	pid_t pid = fork();
	cr_assert_neq(pid, -1);
	if (pid == 0) {
		execv(argv[0], argv);
		_exit(127);
	}
	return pid;
}

static pid_t vcard_run(int port, bool quickack)
{
	return vcard_run_host("127.0.0.1", port, quickack);
}

static void vcard_end(pid_t pid)
{
	int st = 0;
	kill(pid, SIGTERM);
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "vcard status 0x%X", st);
}

/* ---- the tests --------------------------------------------------------------------------- */

TestSuite(vpcd, .init = start, .fini = stop, .timeout = 120);

Test(vpcd, readers_names_and_attributes)
{
	char buf[512];
	cr_assert_eq(list(buf, sizeof(buf)), 2);
	cr_assert_str_eq(buf, R0);
	cr_assert_str_eq(buf + strlen(R0) + 1, R1);
	cr_assert(state_now(R0) & SCARD_STATE_EMPTY);
	cr_assert(state_now(R1) & SCARD_STATE_EMPTY);

	SCARDHANDLE h;
	DWORD proto;
	assert_rv(SCardConnect(ctx, R1, SCARD_SHARE_DIRECT, 0, &h, &proto), SCARD_S_SUCCESS);
	uint8_t v[264];
	DWORD vl = sizeof(v);
	assert_rv(SCardGetAttrib(h, SCARD_ATTR_CHANNEL_ID, v, &vl), SCARD_S_SUCCESS);
	cr_assert_eq(vl, 4u, "integer attributes are 4 bytes");
	uint32_t ch;
	memcpy(&ch, v, 4);
	cr_assert_eq(ch, 0x00F10000u | (uint32_t)(port0 + 1), "channel 0x%08X", ch);
	vl = sizeof(v);
	assert_rv(SCardGetAttrib(h, SCARD_ATTR_MAXINPUT, v, &vl), SCARD_S_SUCCESS);
	memcpy(&ch, v, 4);
	cr_assert_eq(ch, 65535u);
	assert_rv(SCardDisconnect(h, SCARD_LEAVE_CARD), SCARD_S_SUCCESS);
	/* Without a card: nothing to connect to. */
	assert_rv(SCardConnect(ctx, R0, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h, &proto),
	          SCARD_E_NO_SMARTCARD);
}

Test(vpcd, reader_count_from_the_environment)
{
	start_cfg(3, UINT32_MAX, true);
	char buf[512];
	cr_assert_eq(list(buf, sizeof(buf)), 3);
	cr_assert_str_eq(buf + 2 * (strlen(R0) + 1), R2);
	struct tcard *c = tcard(port0 + 2, B_NORMAL);
	cr_assert(wait_state(R2, SCARD_STATE_PRESENT, true, 2000 * slow(), NULL));
	cr_assert(state_now(R0) & SCARD_STATE_EMPTY);
	SCARDHANDLE h = connect_to(R2);
	select_ok(h);
	SCardDisconnect(h, SCARD_LEAVE_CARD);
	tcard_end(c);
}

Test(vpcd, bad_address_turns_the_backend_off)
{
	calais_shutdown();
	start_env("127.0.0.1:70000", NULL, CALAIS_LOG_ERROR, 0);
	char buf[64];
	DWORD len = sizeof(buf);
	assert_rv(SCardListReaders(ctx, NULL, buf, &len), SCARD_E_NO_READERS_AVAILABLE);
}

Test(vpcd, host_name_and_bad_reader_count)
{
	calais_shutdown();
	pick_ports(2);
	char v[64];
	snprintf(v, sizeof(v), "localhost:%d", port0);
	start_env(v, "0", CALAIS_LOG_INFO, UINT32_MAX);
	char buf[512];
	cr_assert_eq(list(buf, sizeof(buf)), 2, "the default count");
	cr_assert(logged("is not a reader count"));
	/* "localhost" is 127.0.0.1 here, where the cards connect. */
	struct tcard *c = tcard(port0 + 1, B_NORMAL);
	cr_assert(wait_state(R1, SCARD_STATE_PRESENT, true, 2000 * slow(), NULL));
	tcard_end(c);
}

Test(vpcd, ipv6_address_in_brackets)
{
	int probe = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in6 a6 = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
	bool v6 = probe >= 0 && bind(probe, (struct sockaddr *)&a6, sizeof(a6)) == 0;
	if (probe >= 0)
		close(probe);
	if (!v6) {
		cr_log_info("no IPv6 loopback here: nothing to check");
		return;
	}
	calais_shutdown();
	pick_ports(2);
	char v[64];
	snprintf(v, sizeof(v), "[::1]:%d", port0);
	start_env(v, NULL, CALAIS_LOG_INFO, 0);
	pid_t pid = vcard_run_host("::1", port0, true);
	cr_assert(wait_state(R0, SCARD_STATE_PRESENT, true, 10000 * slow(), NULL));
	cr_assert(logged("card connected from [::1]:"));
	SCARDHANDLE h = connect_to(R0);
	select_ok(h);
	SCardDisconnect(h, SCARD_LEAVE_CARD);
	vcard_end(pid);
}

Test(vpcd, insertion_and_removal_are_pushed_at_once)
{
	DWORD st = state_now(R0);
	cr_assert(st & SCARD_STATE_EMPTY);
	/* The card connects 50 ms from now, while we wait. */
	struct tcard *c = tcard_run(port0, B_NORMAL, false, 50);
	SCARD_READERSTATE rs = { .szReader = R0, .dwCurrentState = st };
	assert_rv(SCardGetStatusChange(ctx, (DWORD)(5000 * slow()), &rs, 1), SCARD_S_SUCCESS);
	double seen = now_ms();
	cr_assert(tcard_wait(c, U_CONNECTED, 0, 0));
	pthread_mutex_lock(&c->m);
	double lat = seen - c->t_connect;
	pthread_mutex_unlock(&c->m);
	cr_log_info("vpcd insertion seen %.2f ms after the card's connect()", lat);
	cr_assert(rs.dwEventState & SCARD_STATE_PRESENT, "state 0x%lX",
	          (unsigned long)rs.dwEventState);
	cr_assert_lt(lat, LATENCY_MS * slow(), "insertion seen after %.1f ms", lat);
	cr_assert(rs.cbAtr == sizeof(ATR) && memcmp(rs.rgbAtr, ATR, sizeof(ATR)) == 0);
	assert_ctrl(c, "1 4");
	cr_assert(logged("card connected from 127.0.0.1:"));

	SCARDHANDLE h = connect_to(R0);
	select_ok(h);
	check_source(h, 255);

	/* Removal: the waiter wakes as the connection closes. */
	rs.dwCurrentState = state_now(R0); /* in use now */
	double gone = tcard_remove(c);
	assert_rv(SCardGetStatusChange(ctx, (DWORD)(5000 * slow()), &rs, 1), SCARD_S_SUCCESS);
	lat = now_ms() - gone;
	cr_log_info("vpcd removal seen %.2f ms after the card's close", lat);
	cr_assert(rs.dwEventState & SCARD_STATE_EMPTY, "state 0x%lX",
	          (unsigned long)rs.dwEventState);
	cr_assert_lt(lat, LATENCY_MS * slow(), "removal seen after %.1f ms", lat);
	uint8_t resp[258];
	DWORD rl = sizeof(resp);
	assert_rv(xmit(h, SELECT, sizeof(SELECT), resp, &rl), SCARD_W_REMOVED_CARD);
	SCardDisconnect(h, SCARD_LEAVE_CARD);
	tcard_end(c);
}

Test(vpcd, power_sequence_on_the_wire)
{
	struct tcard *c = tcard(port0, B_NORMAL);
	cr_assert(wait_state(R0, SCARD_STATE_PRESENT, true, 2000 * slow(), NULL));
	assert_ctrl(c, "1 4");
	SCARDHANDLE h = connect_to(R0);
	DWORD proto;
	assert_rv(SCardReconnect(h, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, SCARD_RESET_CARD,
	                         &proto),
	          SCARD_S_SUCCESS);
	assert_ctrl(c, "1 4 2 4");
	assert_rv(SCardReconnect(h, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, SCARD_UNPOWER_CARD,
	                         &proto),
	          SCARD_S_SUCCESS);
	assert_ctrl(c, "1 4 2 4 0 1 4");
	select_ok(h);
	assert_rv(SCardDisconnect(h, SCARD_UNPOWER_CARD), SCARD_S_SUCCESS);
	/* Power off has no answer: the card reads it in its own time. */
	cr_assert(tcard_wait(c, U_CTRL, 8, 2000));
	assert_ctrl(c, "1 4 2 4 0 1 4 0");
	tcard_end(c);
}

Test(vpcd, idle_power_down_sends_power_off)
{
	start_cfg(2, 50, true);
	struct tcard *c = tcard(port0, B_NORMAL);
	cr_assert(wait_state(R0, SCARD_STATE_PRESENT, true, 2000 * slow(), NULL));
	cr_assert(tcard_wait(c, U_CTRL, 3, 2000), "no power-off after 50 ms idle");
	assert_ctrl(c, "1 4 0");
	SCARDHANDLE h = connect_to(R0);
	assert_ctrl(c, "1 4 0 1 4");
	select_ok(h);
	SCardDisconnect(h, SCARD_LEAVE_CARD);
	tcard_end(c);
}

Test(vpcd, zero_length_answer_drops_only_that_card)
{
	struct tcard *bad = tcard(port0, B_ZERO_LEN), *good = tcard(port0 + 1, B_NORMAL);
	cr_assert(wait_state(R0, SCARD_STATE_PRESENT, true, 2000 * slow(), NULL));
	cr_assert(wait_state(R1, SCARD_STATE_PRESENT, true, 2000 * slow(), NULL));
	SCARDHANDLE h0 = connect_to(R0), h1 = connect_to(R1);
	uint8_t resp[258];
	DWORD rl = sizeof(resp);
	assert_rv(xmit(h0, SELECT, sizeof(SELECT), resp, &rl), SCARD_F_COMM_ERROR);
	cr_assert(tcard_wait(bad, U_CLOSED, 0, 2000), "the card was not dropped");
	cr_assert(wait_state(R0, SCARD_STATE_EMPTY, true, 2000 * slow(), NULL));
	cr_assert(logged("message of length 0"));
	/* The other reader's card saw nothing of it. */
	select_ok(h1);
	check_source(h1, 100);
	cr_assert(state_now(R1) & SCARD_STATE_PRESENT);
	cr_assert_not(tcard_wait(good, U_CLOSED, 0, 0));
	SCardDisconnect(h0, SCARD_LEAVE_CARD);
	SCardDisconnect(h1, SCARD_LEAVE_CARD);
	tcard_end(bad);
	tcard_end(good);
}

Test(vpcd, long_atr_drops_the_card_unseen)
{
	struct tcard *c = tcard(port0, B_LONG_ATR);
	cr_assert(tcard_wait(c, U_CLOSED, 0, 3000), "the card was not dropped");
	cr_assert(logged("ATR longer than 33 bytes"));
	/* Never shown: the reader is empty with its event count untouched. */
	DWORD st = state_now(R0);
	cr_assert(st & SCARD_STATE_EMPTY, "state 0x%lX", (unsigned long)st);
	cr_assert_eq(st >> 16, 0, "card events: %lu", (unsigned long)(st >> 16));
	tcard_end(c);
	/* The reader takes the next card as usual. */
	c = tcard(port0, B_NORMAL);
	cr_assert(wait_state(R0, SCARD_STATE_PRESENT, true, 2000 * slow(), NULL));
	tcard_end(c);
}

Test(vpcd, answer_longer_than_the_buffer_keeps_the_card_in_step)
{
	struct tcard *c = tcard(port0, B_NORMAL);
	cr_assert(wait_state(R0, SCARD_STATE_PRESENT, true, 2000 * slow(), NULL));
	SCARDHANDLE h = connect_to(R0);
	const uint8_t source300[] = { 0x80, 0xEF, 0x01, 0x2C, 0x00 };
	uint8_t resp[400];
	DWORD rl = 258;
	assert_rv(xmit(h, source300, sizeof(source300), resp, &rl), SCARD_E_INSUFFICIENT_BUFFER);
	cr_assert_eq(rl, 302, "room needed: %lu", (unsigned long)rl);
	/* The long answer was read whole: the next one is the next command's. */
	select_ok(h);
	rl = sizeof(resp);
	assert_rv(xmit(h, source300, sizeof(source300), resp, &rl), SCARD_S_SUCCESS);
	cr_assert_eq(rl, 302);
	cr_assert(resp[299] == (uint8_t)299 && resp[300] == 0x90);
	cr_assert(state_now(R0) & SCARD_STATE_PRESENT);
	cr_assert_not(tcard_wait(c, U_CLOSED, 0, 0));
	SCardDisconnect(h, SCARD_LEAVE_CARD);
	tcard_end(c);
}

Test(vpcd, eof_in_the_middle_of_an_answer_is_a_removal)
{
	struct tcard *c = tcard(port0, B_CUT);
	cr_assert(wait_state(R0, SCARD_STATE_PRESENT, true, 2000 * slow(), NULL));
	SCARDHANDLE h = connect_to(R0);
	uint8_t resp[258];
	DWORD rl = sizeof(resp);
	assert_rv(xmit(h, SELECT, sizeof(SELECT), resp, &rl), SCARD_W_REMOVED_CARD);
	cr_assert(state_now(R0) & SCARD_STATE_EMPTY);
	cr_assert(logged("in the middle of a message"));
	SCardDisconnect(h, SCARD_LEAVE_CARD);
	tcard_end(c);
}

Test(vpcd, data_sent_unasked_drops_the_card)
{
	struct tcard *c = tcard(port0, B_UNASKED);
	cr_assert(wait_state(R0, SCARD_STATE_PRESENT, true, 2000 * slow(), NULL));
	SCARDHANDLE h = connect_to(R0);
	select_ok(h);
	/* The extra message is never taken for this command's answer. */
	uint8_t resp[258];
	DWORD rl = sizeof(resp);
	assert_rv(xmit(h, SELECT, sizeof(SELECT), resp, &rl), SCARD_F_COMM_ERROR);
	cr_assert(tcard_wait(c, U_CLOSED, 0, 2000));
	cr_assert(wait_state(R0, SCARD_STATE_EMPTY, true, 2000 * slow(), NULL));
	cr_assert(logged("data sent unasked"));
	pthread_mutex_lock(&c->m);
	cr_assert_eq(c->apdus, 1, "the second command reached the card");
	pthread_mutex_unlock(&c->m);
	SCardDisconnect(h, SCARD_LEAVE_CARD);
	tcard_end(c);
}

struct xmit_job {
	SCARDHANDLE h;
	LONG rv;
	double took_ms;
};

static void *xmit_thread(void *arg)
{
	struct xmit_job *j = arg;
	uint8_t resp[258];
	DWORD rl = sizeof(resp);
	double t0 = now_ms();
	j->rv = xmit(j->h, SELECT, sizeof(SELECT), resp, &rl);
	j->took_ms = now_ms() - t0;
	return NULL;
}

Test(vpcd, card_that_never_answers_is_cancelled_at_shutdown)
{
	struct tcard *c = tcard(port0, B_MUTE_APDU);
	cr_assert(wait_state(R0, SCARD_STATE_PRESENT, true, 2000 * slow(), NULL));
	struct xmit_job j = { .h = connect_to(R0) };
	pthread_t th;
	cr_assert_eq(pthread_create(&th, NULL, xmit_thread, &j), 0);
	cr_assert(tcard_wait(c, U_APDUS, 1, 2000), "the command never reached the card");
	double t0 = now_ms();
	calais_shutdown();
	double took = now_ms() - t0;
	pthread_join(th, NULL);
	cr_log_info("shutdown with a mute card took %.1f ms", took);
	/* The call ends with the service (backend.h: the core's word for a shutdown). */
	assert_rv(j.rv, SCARD_E_NO_SERVICE);
	cr_assert_lt(took, 2000 * slow());
	cr_assert(tcard_wait(c, U_CLOSED, 0, 2000), "the card's connection outlived shutdown");
	tcard_end(c);
}

Test(vpcd, card_that_never_sends_its_atr_is_dropped)
{
	struct tcard *c = tcard(port0, B_MUTE_ATR), *other = NULL;
	cr_assert(tcard_wait(c, U_CTRL, 2, 2000));
	double t0 = now_ms();
	/* The backend's bound for GET ATR is 5 s. */
	cr_assert(tcard_wait(c, U_CLOSED, 0, 8000), "the mute card was not dropped");
	double took = now_ms() - t0;
	cr_log_info("mute card dropped after %.0f ms", took);
	cr_assert_gt(took, 4000);
	cr_assert(logged("did not answer GET ATR"));
	DWORD st = state_now(R0);
	cr_assert(st & SCARD_STATE_EMPTY, "state 0x%lX", (unsigned long)st);
	cr_assert_eq(st >> 16, 0, "card events: %lu", (unsigned long)(st >> 16));
	other = tcard(port0, B_NORMAL);
	cr_assert(wait_state(R0, SCARD_STATE_PRESENT, true, 2000 * slow(), NULL));
	tcard_end(other);
	tcard_end(c);
}

Test(vpcd, second_card_on_an_occupied_reader_is_refused)
{
	struct tcard *a = tcard(port0, B_NORMAL);
	cr_assert(wait_state(R0, SCARD_STATE_PRESENT, true, 2000 * slow(), NULL));
	SCARDHANDLE h = connect_to(R0);
	DWORD before = state_now(R0);
	struct tcard *b = tcard(port0, B_NORMAL);
	cr_assert(tcard_wait(b, U_CLOSED, 0, 2000), "the second card was not refused");
	cr_assert(logged("connection from 127.0.0.1:"));
	cr_assert(logged("refused"));
	pthread_mutex_lock(&b->m);
	cr_assert_eq(b->n_ctrl + b->apdus, 0, "the second card was spoken to");
	pthread_mutex_unlock(&b->m);
	/* The first card never noticed. */
	select_ok(h);
	check_source(h, 200);
	cr_assert_eq(state_now(R0), before);
	SCardDisconnect(h, SCARD_LEAVE_CARD);
	tcard_end(b);
	tcard_end(a);
}

Test(vpcd, port_in_use_at_start)
{
	calais_shutdown();
	pick_ports(2);
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
	/* Past connections to the port may linger in TIME_WAIT; a listener still excludes
	 * the backend's. */
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port0),
		                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	cr_assert_eq(bind(l, (struct sockaddr *)&a, sizeof(a)), 0);
	cr_assert_eq(listen(l, 1), 0);
	start_cfg(2, UINT32_MAX, false);
	char buf[512];
	cr_assert_eq(list(buf, sizeof(buf)), 2, "both readers are listed");
	cr_assert(state_now(R0) & SCARD_STATE_EMPTY);
	cr_assert(logged("cannot listen on 127.0.0.1 port"));
	/* The other port works meanwhile. */
	struct tcard *c1 = tcard(port0 + 1, B_NORMAL);
	cr_assert(wait_state(R1, SCARD_STATE_PRESENT, true, 2000 * slow(), NULL));
	/* Freed: the backend takes the port at its next attempt. */
	close(l);
	fds_start--; /* it was counted before the start */
	struct tcard *c0 = tcard_run(port0, B_NORMAL, true, 0);
	cr_assert(wait_state(R0, SCARD_STATE_PRESENT, true, 10000 * slow(), NULL));
	SCARDHANDLE h = connect_to(R0);
	select_ok(h);
	SCardDisconnect(h, SCARD_LEAVE_CARD);
	tcard_end(c0);
	tcard_end(c1);
}

/* The real card: insertion latency, APDUs of every size, removal and re-insertion (SIGUSR1),
 * and the card going for good (SIGTERM). */
Test(vpcd, vcard_fixture)
{
	DWORD st = state_now(R0);
	SCARD_READERSTATE rs = { .szReader = R0, .dwCurrentState = st };
	double t_fork = now_ms();
	pid_t pid = vcard_run(port0, true);
	assert_rv(SCardGetStatusChange(ctx, (DWORD)(10000 * slow()), &rs, 1), SCARD_S_SUCCESS);
	double seen = now_ms(), accepted = last_connect_logged();
	cr_assert(rs.dwEventState & SCARD_STATE_PRESENT, "state 0x%lX",
	          (unsigned long)rs.dwEventState);
	cr_assert(accepted > 0, "no \"card connected\" line");
	cr_log_info("vcard: insertion seen %.2f ms after the backend accepted it (%.1f ms after "
	            "fork, exec and connect)",
	            seen - accepted, seen - t_fork);
	cr_assert_lt(seen - accepted, LATENCY_MS * slow());
	cr_assert(rs.cbAtr == sizeof(ATR) && memcmp(rs.rgbAtr, ATR, sizeof(ATR)) == 0);
	cr_assert(state_now(R1) & SCARD_STATE_EMPTY);

	SCARDHANDLE h = connect_to(R0);
	select_ok(h);
	check_echo(h, 200);
	check_source(h, 255);
	uint8_t resp[300];
	const uint8_t source255[] = { 0x80, 0xEF, 0x00, 0xFF, 0x00 };
	DWORD rl = 100;
	assert_rv(xmit(h, source255, sizeof(source255), resp, &rl), SCARD_E_INSUFFICIENT_BUFFER);
	cr_assert_eq(rl, 257);
	select_ok(h);
	check_echo(h, 3000);
	check_source(h, 4096);
	check_source(h, 65533); /* 65535 bytes: the largest message */

	/* SIGUSR1: the card leaves, and comes back 200 ms later. */
	rs.dwCurrentState = state_now(R0);
	double t_kill = now_ms();
	cr_assert_eq(kill(pid, SIGUSR1), 0);
	assert_rv(SCardGetStatusChange(ctx, (DWORD)(5000 * slow()), &rs, 1), SCARD_S_SUCCESS);
	double lat = now_ms() - t_kill;
	cr_log_info("vcard: removal seen %.2f ms after SIGUSR1", lat);
	cr_assert(rs.dwEventState & SCARD_STATE_EMPTY, "state 0x%lX",
	          (unsigned long)rs.dwEventState);
	cr_assert_lt(lat, LATENCY_MS * slow());
	rl = sizeof(resp);
	assert_rv(xmit(h, SELECT, sizeof(SELECT), resp, &rl), SCARD_W_REMOVED_CARD);
	cr_assert(wait_state(R0, SCARD_STATE_PRESENT, true, 5000 * slow(), NULL));
	DWORD proto;
	assert_rv(SCardReconnect(h, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, SCARD_LEAVE_CARD,
	                         &proto),
	          SCARD_S_SUCCESS);
	select_ok(h);

	/* SIGTERM: gone for good. */
	vcard_end(pid);
	cr_assert(wait_state(R0, SCARD_STATE_EMPTY, true, 2000 * slow(), NULL));
	rl = sizeof(resp);
	assert_rv(xmit(h, SELECT, sizeof(SELECT), resp, &rl), SCARD_W_REMOVED_CARD);
	SCardDisconnect(h, SCARD_LEAVE_CARD);
}

Test(vpcd, vcard_in_the_second_reader)
{
	pid_t pid = vcard_run(port0 + 1, true);
	cr_assert(wait_state(R1, SCARD_STATE_PRESENT, true, 10000 * slow(), NULL));
	cr_assert(state_now(R0) & SCARD_STATE_EMPTY);
	SCARDHANDLE h = connect_to(R1);
	select_ok(h);
	check_source(h, 255);
	SCardDisconnect(h, SCARD_LEAVE_CARD);
	vcard_end(pid);
}

/* A card that delays its ACKs (vcard --no-quickack) costs nothing: each message leaves in
 * one segment with TCP_NODELAY, so no exchange waits ~40 ms for an ACK. */
Test(vpcd, vcard_exchanges_without_ack_delays)
{
	pid_t pid = vcard_run(port0, false);
	cr_assert(wait_state(R0, SCARD_STATE_PRESENT, true, 10000 * slow(), NULL));
	SCARDHANDLE h = connect_to(R0);
	select_ok(h);
	const unsigned n = 100;
	double t0 = now_ms();
	for (unsigned i = 0; i < n; i++)
		check_source(h, 255);
	double each = (now_ms() - t0) / n;
	cr_log_info("vcard --no-quickack: %.3f ms per exchange", each);
	cr_assert_lt(each, 10.0 * slow(), "%.1f ms per exchange", each);
	SCardDisconnect(h, SCARD_LEAVE_CARD);
	vcard_end(pid);
}
