/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* For suites run inside tests/peers/with-peer: its private pcscd driven through
 * pcscd-peer (PEER_SCRIPT, PEER_DIR, PEER_PORT from with-peer). Include after Criterion. */
#ifndef CALAIS_PEER_TEST_H
#define CALAIS_PEER_TEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* pcscd-peer <verb> on our peer (stop, start, restart, status): its exit status. */
static inline int peer(const char *verb)
{
	char cmd[1024];
	snprintf(cmd, sizeof(cmd), "'%s' %s '%s' %s >/dev/null 2>&1", getenv("PEER_SCRIPT"), verb,
	         getenv("PEER_DIR"), strcmp(verb, "start") == 0 ? getenv("PEER_PORT") : "");
	return system(cmd);
}

#endif
