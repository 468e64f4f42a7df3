/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Compile-time proof that our 18 prototypes are pcsc-lite's: pcsc-lite's header is
 * included, then our declarations (extracted from our winscard.h at build time) are
 * repeated; any difference in a parameter or return type is a compile error. The data
 * objects and pcsc_stringify_error are redeclared the same way. */
#include <PCSC/winscard.h>

#include "winscard-protos.inc"

extern const SCARD_IO_REQUEST g_rgSCardT0Pci, g_rgSCardT1Pci, g_rgSCardRawPci;
extern const char *pcsc_stringify_error(const LONG);

int abi_protos_checked(void);
int abi_protos_checked(void)
{
	return 18;
}
