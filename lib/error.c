/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Text and names for PC/SC return codes, from the one list in error-list.h. */
#include "calais-internal.h"

#include <stdio.h>

static const struct {
	LONG code;
	const char *name;
	const char *text;
} errors[] = {
#define CALAIS__ERR(name, text) { name, #name, text },
#include "error-list.h"
#undef CALAIS__ERR
};

#if defined(_MSC_VER)
#define THREAD_LOCAL __declspec(thread)
#else
#define THREAD_LOCAL _Thread_local
#endif

const char *calais__error_name(LONG rv)
{
	for (size_t i = 0; i < CALAIS__ARRAY_SIZE(errors); i++)
		if (errors[i].code == rv)
			return errors[i].name;
	return NULL;
}

/* pcsc-lite's contract: the text lives in a per-thread buffer, overwritten by the next
 * call from the same thread; unknown codes read "Unknown error: 0x%08lX". */
const char *pcsc_stringify_error(const LONG rv)
{
	static THREAD_LOCAL char buf[128];
	for (size_t i = 0; i < CALAIS__ARRAY_SIZE(errors); i++)
		if (errors[i].code == rv) {
			snprintf(buf, sizeof(buf), "%s", errors[i].text);
			return buf;
		}
	snprintf(buf, sizeof(buf), "Unknown error: 0x%08lX", (unsigned long)rv);
	return buf;
}
