/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The ABI facts of Calais' PC/SC headers, plus the Linux x86_64 layout pinned down. */
#include <stddef.h>

#include <winscard.h>
#include <reader.h>

#if defined(__x86_64__) && defined(__linux__)
_Static_assert(sizeof(DWORD) == 8 && sizeof(LONG) == 8, "LP64 DWORD/LONG");
_Static_assert(sizeof(SCARDCONTEXT) == 8 && sizeof(SCARDHANDLE) == 8, "handles");
_Static_assert(sizeof(SCARD_READERSTATE) == 80, "SCARD_READERSTATE is 80 bytes");
_Static_assert(offsetof(SCARD_READERSTATE, rgbAtr) == 40, "rgbAtr at 40");
_Static_assert(sizeof(((SCARD_READERSTATE *)0)->rgbAtr) == 33, "33-byte ATR");
_Static_assert(sizeof(SCARD_IO_REQUEST) == 16, "SCARD_IO_REQUEST is 16 bytes");
_Static_assert(sizeof(PIN_VERIFY_STRUCTURE) == 19, "PIN_VERIFY_STRUCTURE is 19 bytes");
_Static_assert(INFINITE == 0xFFFFFFFF, "INFINITE");
_Static_assert(SCARD_AUTOALLOCATE == 0xFFFFFFFFFFFFFFFFul, "SCARD_AUTOALLOCATE");
_Static_assert(CM_IOCTL_GET_FEATURE_REQUEST == 0x42000D48, "feature request code");
#endif

#define ABI_TABLE abi_ours
#include "abi_table.h"
