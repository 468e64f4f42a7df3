/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The vpcd backend's internal interface: its configuration parser, given its own name so
 * tests/fuzz can feed it. */
#ifndef CALAIS_VPCD_INT_H
#define CALAIS_VPCD_INT_H

#include <stddef.h>

#include "calais/pcsc/wintypes.h"

/* CALAIS_VPCD ("host:port", "[v6]:port", "host" or ":port"; NULL or "": the default)
 * and CALAIS_VPCD_READERS (1 to 16; anything else is logged and the default kept):
 * host (cap bytes), the first port and the reader count. SCARD_E_INVALID_VALUE with a
 * log line for a malformed address or ports beyond 65535. No name is resolved here. */
LONG calais__vpcd_parse(const char *spec, const char *readers, char *host, size_t cap,
                        unsigned long *port, unsigned *n_slots);

#endif
