/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Compile-time proof that our 18 SCard* prototypes are pcsc-lite's. pcsc-lite's headers
 * come first; our winscard.h, included next by path, then finds pcsc-lite's include
 * guards for pcsclite.h and wintypes.h set (the same names, on purpose) and so only
 * redeclares the functions, in pcsc-lite's types. Any difference in a return or
 * parameter type is a "conflicting types" error. pcsc_stringify_error and the PCI
 * objects are compared in abi_list.h (ABI_SAME). */
#include <winscard.h>

#ifdef CALAIS_PCSC_API
#error "abi_protos.c must see pcsc-lite's winscard.h first"
#endif

/* Let ours in. */
#undef __winscard_h__
#include "../../include/calais/pcsc/winscard.h"

/* Only ours defines it: proof that the redeclarations above were read. */
#ifndef CALAIS_PCSC_API
#error "our winscard.h was not included"
#endif

/* The checks above happen at compile time; this only lets test_abi.c show the file was
 * built and linked in. */
int abi_protos_checked(void);
int abi_protos_checked(void)
{
	return 18;
}
