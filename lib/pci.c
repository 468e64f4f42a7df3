/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The protocol control information objects of the PC/SC API (16-byte data objects on
 * LP64, as pcsc-lite exports them). */
#include "calais/pcsc/pcsclite.h"

const SCARD_IO_REQUEST g_rgSCardT0Pci = { SCARD_PROTOCOL_T0, sizeof(SCARD_IO_REQUEST) };
const SCARD_IO_REQUEST g_rgSCardT1Pci = { SCARD_PROTOCOL_T1, sizeof(SCARD_IO_REQUEST) };
const SCARD_IO_REQUEST g_rgSCardRawPci = { SCARD_PROTOCOL_RAW, sizeof(SCARD_IO_REQUEST) };
