/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The text of PC/SC return codes (pcsc_stringify_error()), from the list in error-list.h. */
#include <stdio.h>

#include "calais-internal.h"
#include "error-list.h"

#if defined(_MSC_VER) && !defined(__clang__)
#define CALAIS__THREAD_LOCAL __declspec(thread)
#else
#define CALAIS__THREAD_LOCAL _Thread_local
#endif

/* Switches rather than tables: a value listed twice is a compile error. */

static const char *error_text(LONG rv)
{
	switch (rv) {
#define CALAIS__ERR_TEXT(name, text)                                                   \
	case name:                                                                     \
		return text;
		CALAIS__PCSC_ERROR_MAP(CALAIS__ERR_TEXT)
#undef CALAIS__ERR_TEXT
	default:
		return NULL;
	}
}

/* pcsc-lite's contract, kept to the letter: the result is in one buffer per thread,
 * overwritten by that thread's next call (two calls in one printf() print the same
 * text twice, as with pcsc-lite), and codes without text read "Unknown error: 0x%08lX"
 * with the code as an unsigned DWORD. */
const char *pcsc_stringify_error(const LONG rv)
{
	/* pcsc-lite's size; every text fits, and so does a 64-bit code in hex. */
	static CALAIS__THREAD_LOCAL char buf[75];
	const char *text = error_text(rv);
	/* A code no PC/SC implementation uses: how one Calais recognises another it is
	 * about to load as "the platform's PC/SC library" (backends/pcsc). */
	if (rv == CALAIS__SELF_MARK)
		text = "Calais in-process PC/SC resource manager";

	if (text)
		snprintf(buf, sizeof(buf), "%s", text);
	else
		snprintf(buf, sizeof(buf), "Unknown error: 0x%08lX", (unsigned long)(DWORD)rv);
	return buf;
}
