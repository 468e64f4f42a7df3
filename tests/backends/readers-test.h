/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Reader-list helpers the hotplug-capable backend suites share: the count and names of the
 * listed readers, a wait for the backend's rescan to list n of them, and a wait for a
 * reader state bit. Include after Criterion, winscard.h and backend-test.h. */
#ifndef CALAIS_READERS_TEST_H
#define CALAIS_READERS_TEST_H

#include <string.h>
#include <unistd.h>

/* Number of readers listed, and the name of the one at `index` into name (if not NULL). */
static inline unsigned bt_list(SCARDCONTEXT c, unsigned index, char *name)
{
	char buf[4096];
	DWORD len = sizeof(buf);
	LONG rv = SCardListReaders(c, NULL, buf, &len);
	if (rv == SCARD_E_NO_READERS_AVAILABLE)
		return 0;
	assert_rv(rv, SCARD_S_SUCCESS);
	unsigned n = 0;
	for (const char *p = buf; *p; p += strlen(p) + 1, n++)
		if (n == index && name)
			strcpy(name, p);
	return n;
}

/* Waits (up to 3 s) for the backend's rescan to list n readers; the name of the first. */
static inline unsigned bt_wait_readers(SCARDCONTEXT c, unsigned n, char *name)
{
	for (int i = 0; i < 300 && bt_list(c, 0, NULL) != n; i++)
		usleep(10000);
	return bt_list(c, 0, name);
}

/* Waits (up to 5 s) for the reader to show the state bit. */
static inline void bt_wait_state(SCARDCONTEXT c, const char *name, DWORD bit)
{
	SCARD_READERSTATE rs = { .szReader = name, .dwCurrentState = SCARD_STATE_UNAWARE };
	for (int i = 0; i < 50; i++) {
		LONG rv = SCardGetStatusChange(c, 100, &rs, 1);
		cr_assert(rv == SCARD_S_SUCCESS || rv == SCARD_E_TIMEOUT, "%s",
		          pcsc_stringify_error(rv));
		if (rs.dwEventState & bit)
			return;
		rs.dwCurrentState = rs.dwEventState;
	}
	cr_assert_fail("\"%s\" never reached state 0x%lX (0x%lX)", name, (unsigned long)bit,
	               (unsigned long)rs.dwEventState);
}

#endif
