/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* For test_hygiene: prints whether the library takes CALAIS_LOG from the environment
 * (the suite runs it plain and as a setuid copy). */
#include <stdio.h>

#include "calais-internal.h"

/* LeakSanitizer cannot stop the threads of a process that is not dumpable (a setuid
 * one), and it reads no options there: in ASan builds the probe turns it off itself
 * through the sanitizer's documented hook (unused elsewhere). */
int __lsan_is_turned_off(void);
int __lsan_is_turned_off(void)
{
	return 1;
}

int main(void)
{
	const char *v = calais__getenv("CALAIS_LOG");
	if (v)
		printf("CALAIS_LOG=%s\n", v);
	else
		printf("CALAIS_LOG ignored\n");
	return 0;
}
