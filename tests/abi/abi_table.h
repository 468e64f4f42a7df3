/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Builds one table of ABI facts from whichever PC/SC headers the including file has
 * included; abi_ours.c and abi_theirs.c each expand it under their own name. */
#include <stddef.h>
#include <string.h>
#include "abi_entry.h"

#define ABI_CONST(n) { "const " #n, (unsigned long long)(n) },
#define ABI_SIZE(t) { "sizeof " #t, sizeof(t) },
#define ABI_SIGNED(t) { "signed " #t, (unsigned long long)((t)-1 < (t)0) },
#define ABI_MEMBER(t, m) { "offsetof " #t "." #m, offsetof(t, m) },                \
	{ "sizeof " #t "." #m, sizeof(((t *)0)->m) },
/* Flexible array members have an offset but no size. */
#define ABI_OFFSET(t, m) { "offsetof " #t "." #m, offsetof(t, m) },

const struct abi_entry ABI_TABLE[] = {
#include "abi_list.h"
	{ "version " PCSCLITE_VERSION_NUMBER, 0 },
	{ "g_rgSCardT0Pci.dwProtocol", SCARD_PROTOCOL_T0 },
	{ NULL, 0 },
};
