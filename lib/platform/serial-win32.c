/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Serial ports on Win32 (lib/platform/serial.h): a COM port HANDLE in synchronous mode,
 * every wait bounded by COMMTIMEOUTS, plus what Windows cannot be asked for or does not
 * keep (the output lines, error marking). GetLastError() is translated to a PC/SC code,
 * and logged, in one place: native(). */
#include "calais-internal.h"
#include "platform/serial.h"

#include <stdlib.h>
#include <string.h>

/* A COM port: the HANDLE and what Windows cannot be asked for or does not keep. */
struct calais__serial {
	HANDLE h;
	bool mark;               /* emulate PARMRK (see calais__serial_read) */
	bool rts, dtr;           /* the output lines as last driven: SetCommState would reset them */
	bool timeouts_set;
	DWORD read_ms, write_ms; /* the COMMTIMEOUTS in force, once timeouts_set */
	uint8_t pend[2];         /* the rest of an FF 00 c or FF FF sequence not yet handed out */
	uint8_t npend;
	char path[];             /* for logs */
};

/* The PC/SC code for the Win32 error `e` from `what` on `path`, logged with it (debug
 * level when opening: a missing port is tried again every few seconds, and the backend
 * says once why it is unavailable). */
static LONG native(const char *path, const char *what, DWORD e, bool opening)
{
	LONG rv;
	switch (e) {
	case ERROR_FILE_NOT_FOUND:
	case ERROR_PATH_NOT_FOUND:
	case ERROR_DEVICE_REMOVED:
	case ERROR_DEVICE_NOT_CONNECTED:
		rv = SCARD_E_READER_UNAVAILABLE;
		break;
	/* USB-serial drivers fail every call on an open port with one of these once the
	 * adapter is pulled (ERROR_ACCESS_DENIED: usbser.sys after a surprise removal). */
	case ERROR_BAD_COMMAND:
	case ERROR_OPERATION_ABORTED:
	case ERROR_GEN_FAILURE:
		rv = opening ? SCARD_F_COMM_ERROR : SCARD_E_READER_UNAVAILABLE;
		break;
	case ERROR_ACCESS_DENIED: /* COM ports are exclusive: another process holds it */
	case ERROR_SHARING_VIOLATION:
		rv = opening ? SCARD_E_SHARING_VIOLATION : SCARD_E_READER_UNAVAILABLE;
		break;
	case ERROR_NOT_ENOUGH_MEMORY:
	case ERROR_OUTOFMEMORY:
		rv = SCARD_E_NO_MEMORY;
		break;
	default:
		rv = SCARD_F_COMM_ERROR;
		break;
	}
	CALAIS__LOG(opening ? CALAIS_LOG_DEBUG : CALAIS_LOG_INFO, "serial", "%s: %s: Win32 error %lu", path, what, (unsigned long)e);
	return rv;
}

/* The rates the POSIX side offers, as DCB.BaudRate values. */
static DWORD speed(uint32_t bps)
{
	switch (bps) {
	case 9600: return CBR_9600;
	case 19200: return CBR_19200;
	case 38400: return CBR_38400;
	case 57600: return CBR_57600;
	default: return CBR_115200;
	}
}

static LONG configure(calais__serial_t *s, uint32_t bps, enum calais__serial_parity parity,
                      unsigned stop_bits, bool mark_errors, bool opening)
{
	DCB d;
	memset(&d, 0, sizeof(d));
	d.DCBlength = sizeof(d);
	if (!GetCommState(s->h, &d))
		return native(s->path, "GetCommState", GetLastError(), opening);
	d.BaudRate = speed(bps);
	d.ByteSize = 8;
	d.Parity = parity == CALAIS__PARITY_EVEN  ? EVENPARITY
	           : parity == CALAIS__PARITY_ODD ? ODDPARITY
	                                          : NOPARITY;
	d.StopBits = stop_bits == 2 ? TWOSTOPBITS : ONESTOPBIT;
	d.fBinary = TRUE;
	d.fParity = mark_errors && parity != CALAIS__PARITY_NONE;
	d.fOutxCtsFlow = FALSE;
	d.fOutxDsrFlow = FALSE;
	d.fDtrControl = s->dtr ? DTR_CONTROL_ENABLE : DTR_CONTROL_DISABLE;
	d.fRtsControl = s->rts ? RTS_CONTROL_ENABLE : RTS_CONTROL_DISABLE;
	d.fDsrSensitivity = FALSE;
	d.fTXContinueOnXoff = TRUE;
	d.fOutX = FALSE;
	d.fInX = FALSE;
	d.fErrorChar = FALSE; /* a replacement character would lose the byte (TS 03) */
	d.fNull = FALSE;
	d.fAbortOnError = FALSE; /* else a parity error fails every read until cleared */
	if (!SetCommState(s->h, &d))
		return native(s->path, "SetCommState", GetLastError(), opening);
	s->mark = mark_errors && parity != CALAIS__PARITY_NONE;
	s->npend = 0;
	return SCARD_S_SUCCESS;
}

LONG calais__serial_configure(calais__serial_t *s, uint32_t bps, enum calais__serial_parity parity,
                              unsigned stop_bits, bool mark_errors)
{
	return configure(s, bps, parity, stop_bits, mark_errors, false);
}

/* "COM5" or "\\.\COM5" (the prefix is added when missing: COM10 and up need it).
 * Synchronous I/O: the backend serialises calls on a port and bounds every wait. */
LONG calais__serial_open(const char *path, uint32_t bps, enum calais__serial_parity parity,
                         unsigned stop_bits, bool mark_errors, calais__serial_t **out)
{
	char name[280];
	if (strlen(path) >= sizeof(name) - 4)
		return SCARD_E_READER_UNAVAILABLE;
	if (strncmp(path, "\\\\", 2) == 0)
		strcpy(name, path);
	else
		strcat(strcpy(name, "\\\\.\\"), path);
	HANDLE h = CreateFileA(name, GENERIC_READ | GENERIC_WRITE, 0, NULL, OPEN_EXISTING,
	                       FILE_ATTRIBUTE_NORMAL, NULL);
	if (h == INVALID_HANDLE_VALUE)
		return native(path, "CreateFile", GetLastError(), true);
	size_t len = strlen(path);
	calais__serial_t *s = calloc(1, sizeof(*s) + len + 1);
	if (!s) {
		CloseHandle(h);
		return SCARD_E_NO_MEMORY;
	}
	/* Opening a tty raises both lines on POSIX; the same here. */
	s->h = h;
	s->rts = s->dtr = true;
	s->write_ms = 1;
	memcpy(s->path, path, len + 1);
	LONG rv = configure(s, bps, parity, stop_bits, mark_errors, true);
	if (rv != SCARD_S_SUCCESS) {
		CloseHandle(h);
		free(s);
		return rv == SCARD_E_READER_UNAVAILABLE ? rv : SCARD_F_COMM_ERROR;
	}
	PurgeComm(h, PURGE_RXCLEAR | PURGE_TXCLEAR);
	ClearCommError(h, NULL, NULL);
	*out = s;
	return SCARD_S_SUCCESS;
}

void calais__serial_close(calais__serial_t *s)
{
	CloseHandle(s->h);
	free(s);
}

void calais__serial_flush(calais__serial_t *s)
{
	PurgeComm(s->h, PURGE_RXCLEAR);
	ClearCommError(s->h, NULL, NULL);
	s->npend = 0;
}

void calais__serial_discard(calais__serial_t *s)
{
	PurgeComm(s->h, PURGE_RXCLEAR | PURGE_TXCLEAR);
	ClearCommError(s->h, NULL, NULL);
	s->npend = 0;
}

/* Sets the timeouts of the next ReadFile and WriteFile where they changed. Reads: with
 * ReadIntervalTimeout and ReadTotalTimeoutMultiplier both MAXDWORD, ReadFile returns at
 * once what is waiting, else the first byte(s) to arrive within read_ms, else nothing. */
static LONG timeouts(calais__serial_t *s, DWORD read_ms, DWORD write_ms)
{
	if (read_ms > MAXDWORD - 1)
		read_ms = MAXDWORD - 1;
	if (write_ms == 0 || write_ms > MAXDWORD - 1)
		write_ms = write_ms ? MAXDWORD - 1 : 1; /* 0 would mean no timeout at all */
	if (s->timeouts_set && read_ms == s->read_ms && write_ms == s->write_ms)
		return SCARD_S_SUCCESS;
	COMMTIMEOUTS t = {
		.ReadIntervalTimeout = MAXDWORD,
		.ReadTotalTimeoutMultiplier = read_ms ? MAXDWORD : 0, /* 0, 0: return at once */
		.ReadTotalTimeoutConstant = read_ms,
		.WriteTotalTimeoutMultiplier = 0,
		.WriteTotalTimeoutConstant = write_ms,
	};
	if (!SetCommTimeouts(s->h, &t))
		return native(s->path, "SetCommTimeouts", GetLastError(), false);
	s->read_ms = read_ms;
	s->write_ms = write_ms;
	s->timeouts_set = true;
	return SCARD_S_SUCCESS;
}

LONG calais__serial_write(calais__serial_t *s, const uint8_t *b, size_t n, size_t *done,
                          uint32_t timeout_ms)
{
	size_t k = 0;
	LONG rv = timeouts(s, s->read_ms, timeout_ms);
	while (rv == SCARD_S_SUCCESS && k < n) {
		size_t left = n - k;
		DWORD w = 0, chunk = left > 0x10000u ? 0x10000u : (DWORD)left;
		if (!WriteFile(s->h, b + k, chunk, &w, NULL))
			rv = native(s->path, "WriteFile", GetLastError(), false);
		else if (w == 0)
			rv = SCARD_E_TIMEOUT;
		k += w;
	}
	if (done)
		*done = k;
	return rv;
}

/*
 * mark_errors: Windows has no PARMRK. The port checks parity (fParity) and keeps the
 * bytes; after each byte ClearCommError says whether a parity or framing error was seen,
 * and the byte is handed out as FF 00 c, a real FF as FF FF, the stream the POSIX side
 * reads. The gap: the error flag belongs to the port, not to a byte, so when several
 * bytes were already queued an error is charged to the one read just before it was
 * noticed. A direct UART card reader's half-duplex, byte-by-byte exchanges rarely queue
 * more than one byte; IOCTL_SERIAL_LSRMST_INSERT would be exact but few USB-serial drivers
 * (and not wine) implement it.
 */
LONG calais__serial_read(calais__serial_t *s, uint8_t *b, size_t n, size_t *got,
                         uint32_t timeout_ms)
{
	size_t done = 0;
	LONG rv = SCARD_S_SUCCESS;
	while (done < n) {
		if (s->npend) {
			b[done++] = s->pend[0];
			s->pend[0] = s->pend[1];
			s->npend--;
			continue;
		}
		if ((rv = timeouts(s, timeout_ms, s->write_ms)) != SCARD_S_SUCCESS)
			break;
		size_t left = n - done;
		DWORD want = s->mark ? 1 : left > 0x10000u ? 0x10000u : (DWORD)left, k = 0;
		if (!ReadFile(s->h, b + done, want, &k, NULL)) {
			rv = native(s->path, "ReadFile", GetLastError(), false);
			break;
		}
		if (k == 0) {
			rv = SCARD_E_TIMEOUT;
			break;
		}
		if (s->mark) {
			DWORD errs = 0;
			ClearCommError(s->h, &errs, NULL);
			uint8_t c = b[done];
			if (errs & (CE_RXPARITY | CE_FRAME)) {
				b[done] = 0xFF;
				s->pend[0] = 0x00;
				s->pend[1] = c;
				s->npend = 2;
			} else if (c == 0xFF) {
				s->pend[0] = 0xFF;
				s->npend = 1;
			}
		}
		done += k;
	}
	if (got)
		*got = done;
	return rv;
}

void calais__serial_rts(calais__serial_t *s, bool on)
{
	s->rts = on;
	EscapeCommFunction(s->h, on ? SETRTS : CLRRTS);
}

void calais__serial_dtr(calais__serial_t *s, bool on)
{
	s->dtr = on;
	EscapeCommFunction(s->h, on ? SETDTR : CLRDTR);
}

LONG calais__serial_modem(calais__serial_t *s, unsigned *lines)
{
	DWORD bits = 0;
	if (!GetCommModemStatus(s->h, &bits))
		return native(s->path, "GetCommModemStatus", GetLastError(), false);
	*lines = (bits & MS_CTS_ON ? CALAIS__MODEM_CTS : 0) | (bits & MS_DSR_ON ? CALAIS__MODEM_DSR : 0) |
	         (bits & MS_RLSD_ON ? CALAIS__MODEM_CD : 0) | (bits & MS_RING_ON ? CALAIS__MODEM_RI : 0);
	return SCARD_S_SUCCESS;
}
