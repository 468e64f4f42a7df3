/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The passthrough backend's internal interface: what pcsc.c parses of the platform
 * service's answers, given its own name so tests/fuzz can feed it. */
#ifndef CALAIS_PCSC_INT_H
#define CALAIS_PCSC_INT_H

#include <stddef.h>

/* The reader names of a multi-string from the service (untrusted: it may lack its final
 * NULs, hold names longer than MAX_READERNAME or the same name twice). names[] gets at
 * most max pointers into buf, each to a name NUL-terminated within len, shorter than
 * MAX_READERNAME and listed once; the list ends at the first empty name or at len, and
 * every name left out is logged. Returns how many were stored. */
size_t calais__pcsc_names(const char *buf, size_t len, const char **names, size_t max);

#endif
