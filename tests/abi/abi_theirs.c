/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The ABI facts of pcsc-lite's installed headers (compiled with libpcsclite's cflags,
 * and never with our include directory). */
#include <winscard.h>
#include <reader.h>

/* Ours define it; finding it here means the include path picked our copies. */
#ifdef CALAIS_PCSC_API
#error "abi_theirs.c must be compiled against pcsc-lite's headers, not Calais'"
#endif

#define ABI_TABLE abi_theirs
#define ABI_VERSION abi_theirs_version
#include "abi_table.h"
