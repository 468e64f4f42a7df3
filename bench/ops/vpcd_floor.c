// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * vpcd_floor: the floor under any vpcd transport. It plays vpcd's reader side with bare
 * sockets (listen, let tests/peers/vcard connect, send each APDU as one message, read the
 * answer) and times the round trips of the APDUs bench_ops sends, so bench/ops can show
 * how much of a Transmit is the card and the loopback TCP, and how much the manager.
 *
 *   vpcd_floor -o FILE -l LABEL -P PORT [-n N] [-w N]
 *
 * Samples are appended as "<label>\tfloor_2\t<us>" and "<label>\tfloor_257\t<us>", as
 * bench_ops writes them.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static double now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static void fail(const char *what)
{
	perror(what);
	exit(1);
}

/* Reads exactly n bytes, re-arming TCP_QUICKACK after each read as a real vpcd reader
 * must (see tests/peers/vcard.c), so neither side waits for a delayed ACK. */
static void read_full(int fd, uint8_t *buf, size_t n)
{
	int one = 1;
	size_t got = 0;
	while (got < n) {
		ssize_t k = recv(fd, buf + got, n - got, 0);
		if (k <= 0) {
			if (k < 0 && errno == EINTR)
				continue;
			fprintf(stderr, "vpcd_floor: the card went away\n");
			exit(1);
		}
		got += (size_t)k;
		setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
	}
}

/* One exchange: the length and the APDU in one write, then the answer. */
static size_t exchange(int fd, const uint8_t *apdu, size_t n, uint8_t *resp)
{
	uint8_t hdr[2] = { (uint8_t)(n >> 8), (uint8_t)n };
	struct iovec iov[2] = { { hdr, 2 }, { (void *)apdu, n } };
	struct msghdr m = { .msg_iov = iov, .msg_iovlen = 2 };
	if (sendmsg(fd, &m, MSG_NOSIGNAL) != (ssize_t)(n + 2))
		fail("sendmsg");
	read_full(fd, hdr, 2);
	size_t len = (size_t)hdr[0] << 8 | hdr[1];
	if (len > 300) {
		fprintf(stderr, "vpcd_floor: %zu-byte answer\n", len);
		exit(1);
	}
	read_full(fd, resp, len);
	return len;
}

int main(int argc, char **argv)
{
	static const uint8_t sel[] = { 0x00, 0xA4, 0x04, 0x00, 0x05, 0xA0, 0x00, 0x00, 0x00, 0x01 };
	static const uint8_t src[] = { 0x80, 0xEF, 0x00, 0xFF, 0x00 };
	const char *out_path = NULL, *label = NULL;
	int port = 0, n = 2000, warm = 50, c;
	while ((c = getopt(argc, argv, "o:l:P:n:w:")) != -1) {
		switch (c) {
		case 'o': out_path = optarg; break;
		case 'l': label = optarg; break;
		case 'P': port = atoi(optarg); break;
		case 'n': n = atoi(optarg); break;
		case 'w': warm = atoi(optarg); break;
		default: return 2;
		}
	}
	if (!out_path || !label || port <= 0 || port > 65535 || n < 1 || warm < 0) {
		fprintf(stderr, "usage: vpcd_floor -o FILE -l LABEL -P PORT [-n N] [-w N]\n");
		return 2;
	}
	FILE *out = fopen(out_path, "a");
	double *v = calloc((size_t)n, sizeof *v);
	if (!out || !v)
		fail(out_path);

	int one = 1, ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof a) < 0 || listen(ls, 4) < 0)
		fail("vpcd_floor: listen");
	/* The card retries every 100 ms; give it a few seconds. */
	struct pollfd p = { ls, POLLIN, 0 };
	if (poll(&p, 1, 5000) != 1) {
		fprintf(stderr, "vpcd_floor: no card connected to port %d\n", port);
		return 1;
	}
	int fd = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0)
		fail("accept");
	close(ls);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

	uint8_t resp[300];
	const struct { const char *op; const uint8_t *apdu; size_t len; size_t want; } t[] = {
		{ "floor_2", sel, sizeof sel, 2 },
		{ "floor_257", src, sizeof src, 257 },
	};
	for (size_t k = 0; k < 2; k++) {
		for (int i = -warm; i < n; i++) {
			double t0 = now_us();
			size_t len = exchange(fd, t[k].apdu, t[k].len, resp);
			double t1 = now_us();
			if (len != t[k].want || resp[len - 2] != 0x90) {
				fprintf(stderr, "vpcd_floor: unexpected %zu-byte answer\n", len);
				return 1;
			}
			if (i >= 0)
				v[i] = t1 - t0;
		}
		for (int i = 0; i < n; i++)
			fprintf(out, "%s\t%s\t%.3f\n", label, t[k].op, v[i]);
	}
	close(fd);
	free(v);
	return fclose(out) == 0 ? 0 : 1;
}
