/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The same facts from pcsc-lite's installed headers (libpcsclite-dev). */
#include <PCSC/winscard.h>
#include <PCSC/reader.h>

#define ABI_TABLE abi_theirs
#include "abi_table.h"
