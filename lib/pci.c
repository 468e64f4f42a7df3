/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The three protocol control information objects of the PC/SC API (SCARD_PCI_T0,
 * SCARD_PCI_T1, SCARD_PCI_RAW): data symbols, as pcsc-lite exports them. */
#include "calais/pcsc/pcsclite.h"

/* cbPciLength covers the header alone: no protocol-specific data follows it. */
#define CALAIS__PCI(protocol) { (protocol), sizeof(SCARD_IO_REQUEST) }

CALAIS_PCSC_API const SCARD_IO_REQUEST g_rgSCardT0Pci = CALAIS__PCI(SCARD_PROTOCOL_T0);
CALAIS_PCSC_API const SCARD_IO_REQUEST g_rgSCardT1Pci = CALAIS__PCI(SCARD_PROTOCOL_T1);
CALAIS_PCSC_API const SCARD_IO_REQUEST g_rgSCardRawPci = CALAIS__PCI(SCARD_PROTOCOL_RAW);
