/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The virtual authenticator (vauth.c) on a pipe: 64-byte output reports on stdin, input
 * reports on stdout, each when due, until stdin closes. For check-fido2.py, which drives
 * it with python-fido2's CTAPHID client; U2F with real keys (vauth-u2f.c). Usage:
 *   vauth-pipe [caps-hex] [keepalives] [fault[=arg]]
 * fault: none, keepalive-forever, error=HH, busy=N, silent. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "vauth.h"

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int write_all(const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t w = write(1, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

int main(int argc, char **argv)
{
	static struct vauth v;
	vauth_init(&v, argc > 1 ? (uint8_t)strtoul(argv[1], NULL, 16) : 0x05);
	vauth_use_u2f(&v);
	v.keepalives = argc > 2 ? (unsigned)strtoul(argv[2], NULL, 10) : 0;
	if (argc > 3) {
		const char *f = argv[3], *eq = strchr(f, '=');
		unsigned arg = eq ? (unsigned)strtoul(eq + 1, NULL, 16) : 0;
		size_t len = eq ? (size_t)(eq - f) : strlen(f);
		static const struct {
			const char *name;
			enum vauth_fault f;
		} names[] = { { "none", VA_NONE }, { "keepalive-forever", VA_KEEPALIVE_FOREVER },
		              { "error", VA_ERROR }, { "busy", VA_BUSY }, { "silent", VA_SILENT } };
		size_t i = 0;
		while (i < sizeof(names) / sizeof(names[0]) &&
		       (strlen(names[i].name) != len || strncmp(names[i].name, f, len) != 0))
			i++;
		if (i == sizeof(names) / sizeof(names[0])) {
			fprintf(stderr, "vauth-pipe: unknown fault %s\n", f);
			return 2;
		}
		v.fault = names[i].f;
		v.fault_arg = arg;
	}
	uint8_t rep[VAUTH_REPORT], in[VAUTH_REPORT];
	size_t got = 0;
	for (;;) {
		uint64_t wake;
		while (vauth_next(&v, rep, now_ms(), &wake))
			if (write_all(rep, sizeof(rep)) != 0)
				return 1;
		uint64_t now = now_ms();
		int timeout = wake == UINT64_MAX ? -1 : wake > now ? (int)(wake - now) : 0;
		struct pollfd p = { .fd = 0, .events = POLLIN };
		int rc = poll(&p, 1, timeout);
		if (rc < 0 && errno != EINTR)
			return 1;
		if (rc <= 0)
			continue;
		ssize_t r = read(0, in + got, sizeof(in) - got);
		if (r == 0)
			return 0;
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return 1;
		}
		got += (size_t)r;
		if (got == sizeof(in)) {
			vauth_output(&v, in, now_ms());
			got = 0;
		}
	}
}
