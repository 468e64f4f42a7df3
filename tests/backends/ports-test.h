/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Free TCP ports on the loopback for the suites whose readers listen (vpcd), picked at
 * run time from a start that differs between processes (Criterion runs tests in
 * parallel, the plain build next to it) and moves on with every call. Linux. Include
 * after Criterion. */
#ifndef CALAIS_PORTS_TEST_H
#define CALAIS_PORTS_TEST_H

#include <netinet/in.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <unistd.h>

/* Nobody listens on the port: a bind with SO_REUSEADDR (as the vpcd backend's) succeeds. */
static inline bool bt_port_free(int port)
{
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return false;
	int one = 1;
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
		                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	bool ok = bind(s, (struct sockaddr *)&a, sizeof(a)) == 0;
	close(s);
	return ok;
}

/* The first of n free ports in a row in [base, base + span), in steps of 4. */
static inline int bt_pick_ports(unsigned base, unsigned span, unsigned n)
{
	static unsigned next;
	if (!next)
		next = (unsigned)(getpid() % (span / 4)) * 4;
	for (unsigned k = 0; k < span / 4; k++) {
		unsigned p = base + next % span;
		next += 4;
		bool ok = true;
		for (unsigned i = 0; i < n && ok; i++)
			ok = bt_port_free((int)(p + i));
		if (ok)
			return (int)p;
	}
	cr_assert_fail("no %u free ports in a row from %u", n, base);
	return -1;
}

#endif
