/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The fault matrix's neighbour card for vpcd readers (Calais' vpcd backend, or pcscd's
 * vpcd driver): a well-behaved card played by a thread of the test, inserted by
 * connecting to the reader's port (at once: the listening socket takes it), so the
 * neighbour's delay is the reader side's alone, with no process to start. It answers
 * GET ATR with ATR and every APDU with 90 00, until the reader closes. Linux. Include
 * after Criterion. */
#ifndef CALAIS_VPCD_CARD_H
#define CALAIS_VPCD_CARD_H

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct ncard {
	int port;             /* the reader's */
	const uint8_t *atr;
	size_t atr_len;       /* at most 33 */
	int fd;
	pthread_t th;
	bool running;
};

static inline bool nc_read(int fd, uint8_t *b, size_t n)
{
	for (size_t got = 0; got < n;) {
		ssize_t k = recv(fd, b + got, n - got, 0);
		if (k <= 0)
			return false;
		got += (size_t)k;
	}
	return true;
}

static void *nc_main(void *arg)
{
	struct ncard *c = arg;
	uint8_t hdr[2], msg[65536], out[2 + 33];
	while (nc_read(c->fd, hdr, 2)) {
		size_t n = (size_t)hdr[0] << 8 | hdr[1];
		if (!n || !nc_read(c->fd, msg, n))
			break;
		size_t len = 0;
		if (n == 1 && msg[0] == 4) {
			memcpy(out + 2, c->atr, c->atr_len);
			len = c->atr_len;
		} else if (n >= 2) {
			out[2] = 0x90;
			out[3] = 0x00;
			len = 2;
		}
		if (len) {
			out[0] = 0;
			out[1] = (uint8_t)len;
			if (send(c->fd, out, 2 + len, MSG_NOSIGNAL) != (ssize_t)(2 + len))
				break;
		}
	}
	return NULL;
}

/* fm_assert_neighbour_sees()'s insert(): arg is a struct ncard with port and ATR set. */
static inline void nc_insert(void *arg)
{
	struct ncard *c = arg;
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(c->fd, 0);
	int one = 1;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)c->port),
		                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	cr_assert_eq(connect(c->fd, (struct sockaddr *)&a, sizeof(a)), 0, "connect: %s",
	             strerror(errno));
	cr_assert_eq(pthread_create(&c->th, NULL, nc_main, c), 0);
	c->running = true;
}

/* The card leaves (the reader sees its connection close). */
static inline void nc_end(struct ncard *c)
{
	if (!c->running)
		return;
	shutdown(c->fd, SHUT_RDWR);
	pthread_join(c->th, NULL);
	close(c->fd);
	c->running = false;
}

#endif
