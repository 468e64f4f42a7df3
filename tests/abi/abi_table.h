/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Expands abi_list.h into a table of ABI facts under whichever PC/SC headers the
 * including file has included; abi_ours.c and abi_theirs.c each name it (ABI_TABLE,
 * ABI_VERSION) and so produce the two sides of the comparison. */
#include <stddef.h>

#include "abi_entry.h"

/* A number for the type of an expression: integer types and the pointer types the PC/SC
 * headers use; 0 for anything else (structures, struct pointers, functions), which the
 * other facts cover. Unevaluated, so null member accesses are fine. */
#define ABI_KIND(e)                                                                    \
	_Generic((e),                                                                  \
		_Bool: 1, char: 2, signed char: 3, unsigned char: 4,                   \
		short: 5, unsigned short: 6, int: 7, unsigned int: 8,                  \
		long: 9, unsigned long: 10, long long: 11, unsigned long long: 12,     \
		void *: 20, const void *: 21, char *: 22, const char *: 23,            \
		signed char *: 24, unsigned char *: 25, const unsigned char *: 26,     \
		short *: 27, unsigned short *: 28, int *: 29, unsigned int *: 30,      \
		long *: 31, unsigned long *: 32,                                       \
		default: 0)

#define ABI_CONST(e)                                                                   \
	{ "value " #e, (unsigned long long)(e) }, { "type " #e, ABI_KIND(e) },
#define ABI_TYPEOF(e) { "type " #e, ABI_KIND(e) },
#define ABI_SAME(e, t) { "typeof(" #e ") == " #t, _Generic((e), t: 1, default: 0) },
#define ABI_SCALAR(t)                                                                  \
	{ "sizeof " #t, sizeof(t) }, { "alignof " #t, _Alignof(t) },                   \
	{ "type " #t, ABI_KIND((t)0) },
#define ABI_POINTER(t, to)                                                             \
	ABI_SCALAR(t)                                                                  \
	{ #t " points to " #to " (1) or const " #to " (2)",                            \
	  _Generic((t)0, to *: 1, const to *: 2, default: 0) },
#define ABI_STRUCT(t) { "sizeof " #t, sizeof(t) }, { "alignof " #t, _Alignof(t) },
#define ABI_MEMBER(t, m)                                                               \
	{ "offsetof " #t "." #m, offsetof(t, m) },                                     \
	{ "sizeof " #t "." #m, sizeof(((t *)0)->m) },                                  \
	{ "type " #t "." #m, ABI_KIND(((t *)0)->m) },
/* A flexible array member has an offset but no size. */
#define ABI_FLEX(t, m)                                                                 \
	{ "offsetof " #t "." #m, offsetof(t, m) },                                     \
	{ "type " #t "." #m, ABI_KIND(((t *)0)->m) },

const struct abi_entry ABI_TABLE[] = {
#include "abi_list.h"
	{ NULL, 0 },
};

const char ABI_VERSION[] = PCSCLITE_VERSION_NUMBER;
