/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Serial ports for the serial reader backend: open, line settings (parity and error
 * marking for direct UART card readers), reads and writes with a timeout, modem lines.
 * Declared here, implemented once per platform: serial-posix.c (termios, a file
 * descriptor) and serial-win32.c (a COM port HANDLE with the little state Windows does
 * not keep), built only with the serial backend. Every function answers a PC/SC code;
 * the native error (errno, GetLastError) is logged where it is translated. A port is
 * used by one thread at a time (the backend's port lock). */
#ifndef CALAIS_PLATFORM_SERIAL_H
#define CALAIS_PLATFORM_SERIAL_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "calais/pcsc/wintypes.h"

typedef struct calais__serial calais__serial_t;

enum calais__serial_parity { CALAIS__PARITY_NONE, CALAIS__PARITY_EVEN, CALAIS__PARITY_ODD };

/* Modem status inputs. */
#define CALAIS__MODEM_CTS 0x1u
#define CALAIS__MODEM_DSR 0x2u
#define CALAIS__MODEM_CD 0x4u
#define CALAIS__MODEM_RI 0x8u

/* Opens the port exclusively, configured as calais__serial_configure() does, flushed.
 * SCARD_E_READER_UNAVAILABLE: no such device (an unplugged USB-serial adapter);
 * SCARD_E_SHARING_VIOLATION: held by another process; SCARD_E_NO_ACCESS: no permission;
 * SCARD_F_COMM_ERROR otherwise. Win32: "COM5" or "\\.\COM5". */
LONG calais__serial_open(const char *path, uint32_t bps, enum calais__serial_parity parity,
                         unsigned stop_bits, bool mark_errors, calais__serial_t **out);
void calais__serial_close(calais__serial_t *s);

/* Line settings: raw, 8 data bits, the rate (9600 to 115200; others run at 115200),
 * parity and stop bits asked for, no flow control, RTS and DTR left as they were.
 * mark_errors: characters received with a parity or framing error come as FF 00 <char>,
 * and a real FF as FF FF (POSIX PARMRK, emulated on Win32), for protocols that must
 * see them. */
LONG calais__serial_configure(calais__serial_t *s, uint32_t bps, enum calais__serial_parity parity,
                              unsigned stop_bits, bool mark_errors);

/* Writes all of b, waiting at most timeout_ms each time the line takes no more:
 * SCARD_E_TIMEOUT then, with *done (may be NULL) the bytes written before it. */
LONG calais__serial_write(calais__serial_t *s, const uint8_t *b, size_t n, size_t *done,
                          uint32_t timeout_ms);

/* Reads n bytes, each within timeout_ms of the previous one: SCARD_E_TIMEOUT when one
 * does not come, with *got (may be NULL) the bytes read before it. timeout_ms 0: only
 * what is already waiting. SCARD_E_READER_UNAVAILABLE: the device went away. */
LONG calais__serial_read(calais__serial_t *s, uint8_t *b, size_t n, size_t *got,
                         uint32_t timeout_ms);

/* Drops what was received and not read; discard: in both directions. */
void calais__serial_flush(calais__serial_t *s);
void calais__serial_discard(calais__serial_t *s);

/* Drives RTS / DTR (true: asserted). Ports without modem lines (a pseudo-terminal)
 * ignore it. */
void calais__serial_rts(calais__serial_t *s, bool on);
void calais__serial_dtr(calais__serial_t *s, bool on);

/* Reads the modem status lines (CALAIS__MODEM_*); SCARD_F_COMM_ERROR where the port has
 * none. */
LONG calais__serial_modem(calais__serial_t *s, unsigned *lines);

#endif
