/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The ABI facts of Calais' PC/SC headers, plus compile-time checks of what pcsc-lite
 * 1.9.9 (the reference installed here) cannot show: the Linux x86_64 layout in bytes,
 * and the names only newer pcsc-lite has. */
#include <stddef.h>

#include <winscard.h>
#include <reader.h>

/* Compiled with include/calais/pcsc on the path; pcsc-lite's copies must not win. */
#ifndef CALAIS_PCSC_API
#error "abi_ours.c must be compiled against Calais' headers, not pcsc-lite's"
#endif

#if defined(__x86_64__) && defined(__linux__)
_Static_assert(sizeof(DWORD) == 8 && sizeof(LONG) == 8 && sizeof(ULONG) == 8, "LP64 longs");
_Static_assert(sizeof(SCARDCONTEXT) == 8 && sizeof(SCARDHANDLE) == 8, "handles are longs");
_Static_assert(sizeof(BYTE) == 1 && sizeof(WORD) == 2 && sizeof(BOOL) == 2, "small types");
_Static_assert(sizeof(SCARD_READERSTATE) == 80, "SCARD_READERSTATE is 80 bytes");
_Static_assert(offsetof(SCARD_READERSTATE, dwCurrentState) == 16, "dwCurrentState at 16");
_Static_assert(offsetof(SCARD_READERSTATE, cbAtr) == 32, "cbAtr at 32");
_Static_assert(offsetof(SCARD_READERSTATE, rgbAtr) == 40, "rgbAtr at 40");
_Static_assert(sizeof(((SCARD_READERSTATE *)0)->rgbAtr) == 33, "rgbAtr is 33 bytes");
_Static_assert(sizeof(SCARD_IO_REQUEST) == 16, "SCARD_IO_REQUEST is 16 bytes");
_Static_assert(sizeof(PCSC_TLV_STRUCTURE) == 6, "PCSC_TLV_STRUCTURE is 6 bytes");
_Static_assert(sizeof(PIN_VERIFY_STRUCTURE) == 19, "PIN_VERIFY_STRUCTURE is 19 bytes");
_Static_assert(sizeof(PIN_MODIFY_STRUCTURE) == 24, "PIN_MODIFY_STRUCTURE is 24 bytes");
_Static_assert(sizeof(PIN_PROPERTIES_STRUCTURE) == 4, "PIN_PROPERTIES_STRUCTURE is 4 bytes");
_Static_assert(SCARD_AUTOALLOCATE == 0xFFFFFFFFFFFFFFFFul, "SCARD_AUTOALLOCATE is a DWORD -1");
#endif

/* Layout-independent facts. */
_Static_assert(INFINITE == 0xFFFFFFFFu, "INFINITE");
_Static_assert(CM_IOCTL_GET_FEATURE_REQUEST == 0x42000D48, "CM_IOCTL_GET_FEATURE_REQUEST");
_Static_assert(SCARD_E_UNSUPPORTED_FEATURE == (LONG)0x8010001F, "pcsc-lite's value, not 0x80100022");
_Static_assert(MAX_BUFFER_SIZE_EXTENDED == 65548, "MAX_BUFFER_SIZE_EXTENDED");

/* pcsc-lite 2.x: the corrected spelling of 0x8010002B, the old one kept as an alias. */
_Static_assert(SCARD_E_UNKNOWN_RES_MSG == (LONG)0x8010002B, "SCARD_E_UNKNOWN_RES_MSG");
_Static_assert(SCARD_E_UNKNOWN_RES_MNG == SCARD_E_UNKNOWN_RES_MSG, "SCARD_E_UNKNOWN_RES_MNG");

#define ABI_TABLE abi_ours
#define ABI_VERSION abi_ours_version
#include "abi_table.h"
