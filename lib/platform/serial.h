/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Serial ports for the serial reader backend: open, line settings (parity and error
 * marking for direct UART card readers), reads with a timeout, writes, modem lines. The
 * same functions on POSIX (termios, a file descriptor) and Win32 (a COM port HANDLE with
 * the little state Windows does not keep). */
#ifndef CALAIS_PLATFORM_SERIAL_H
#define CALAIS_PLATFORM_SERIAL_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

enum calais__serial_status {
	CALAIS__SERIAL_OK = 0,
	CALAIS__SERIAL_TIMEOUT,
	CALAIS__SERIAL_MISSING, /* no such device (unplugged USB-serial adapter) */
	CALAIS__SERIAL_BUSY,    /* held by another process (lock or exclusive open) */
	CALAIS__SERIAL_ACCESS,  /* no permission */
	CALAIS__SERIAL_ERROR,
};

enum calais__serial_parity { CALAIS__PARITY_NONE, CALAIS__PARITY_EVEN, CALAIS__PARITY_ODD };

/* Modem status inputs. */
#define CALAIS__MODEM_CTS 0x1u
#define CALAIS__MODEM_DSR 0x2u
#define CALAIS__MODEM_CD 0x4u
#define CALAIS__MODEM_RI 0x8u

#if defined(_WIN32)
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN /* no <winscard.h>: the PC/SC declarations are ours */
#endif
#include <windows.h>
#include <stdlib.h>
#include <string.h>

/* A COM port: the HANDLE and what Windows cannot be asked for or does not keep. */
struct calais__serial_port {
	HANDLE h;
	bool mark;           /* emulate PARMRK (see calais__serial_read) */
	bool rts, dtr;       /* the output lines as last driven: SetCommState would reset them */
	bool timeouts_set;
	DWORD read_ms, write_ms; /* the COMMTIMEOUTS in force, once timeouts_set */
	uint8_t pend[2];     /* the rest of an FF 00 c or FF FF sequence not yet handed out */
	uint8_t npend;
};
typedef struct calais__serial_port *calais__serial_t;

/* The rates the POSIX side offers, as DCB.BaudRate values. */
static inline DWORD calais__serial_speed(uint32_t bps)
{
	switch (bps) {
	case 9600: return CBR_9600;
	case 19200: return CBR_19200;
	case 38400: return CBR_38400;
	case 57600: return CBR_57600;
	default: return CBR_115200;
	}
}

/* The Win32 error of a failed call on an open port. USB-serial drivers fail every call
 * with one of these once the adapter is pulled. */
static inline enum calais__serial_status calais__serial_win_status(DWORD e)
{
	switch (e) {
	case ERROR_BAD_COMMAND:
	case ERROR_DEVICE_REMOVED:
	case ERROR_OPERATION_ABORTED:
	case ERROR_DEVICE_NOT_CONNECTED:
	case ERROR_GEN_FAILURE:
	case ERROR_FILE_NOT_FOUND:
	case ERROR_ACCESS_DENIED: /* usbser.sys after a surprise removal */
		return CALAIS__SERIAL_MISSING;
	default:
		return CALAIS__SERIAL_ERROR;
	}
}

/* Line settings: binary, 8 data bits, the rate, parity and stop bits asked for, no flow
 * control, RTS and DTR left as they were. mark_errors: see calais__serial_read. */
static inline enum calais__serial_status calais__serial_configure(calais__serial_t s, uint32_t bps,
                                                                  enum calais__serial_parity parity,
                                                                  unsigned stop_bits,
                                                                  bool mark_errors)
{
	DCB d;
	memset(&d, 0, sizeof(d));
	d.DCBlength = sizeof(d);
	if (!GetCommState(s->h, &d))
		return calais__serial_win_status(GetLastError());
	d.BaudRate = calais__serial_speed(bps);
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
		return calais__serial_win_status(GetLastError());
	s->mark = mark_errors && parity != CALAIS__PARITY_NONE;
	s->npend = 0;
	return CALAIS__SERIAL_OK;
}

/* Opens "COM5" or "\\.\COM5" (the prefix is added when missing: COM10 and up need it),
 * configured as calais__serial_configure() does, flushed. COM ports are exclusive by
 * nature: another process holding it makes ERROR_ACCESS_DENIED, hence BUSY. Synchronous
 * I/O: the backend serialises calls on a port (port.lock) and bounds every wait. */
static inline enum calais__serial_status calais__serial_open(const char *path, uint32_t bps,
                                                             enum calais__serial_parity parity,
                                                             unsigned stop_bits, bool mark_errors,
                                                             calais__serial_t *out)
{
	char name[280];
	if (strlen(path) >= sizeof(name) - 4)
		return CALAIS__SERIAL_MISSING;
	if (strncmp(path, "\\\\", 2) == 0)
		strcpy(name, path);
	else
		strcat(strcpy(name, "\\\\.\\"), path);
	HANDLE h = CreateFileA(name, GENERIC_READ | GENERIC_WRITE, 0, NULL, OPEN_EXISTING,
	                       FILE_ATTRIBUTE_NORMAL, NULL);
	if (h == INVALID_HANDLE_VALUE) {
		DWORD e = GetLastError();
		return e == ERROR_FILE_NOT_FOUND || e == ERROR_PATH_NOT_FOUND ||
		               e == ERROR_DEVICE_REMOVED || e == ERROR_DEVICE_NOT_CONNECTED
		               ? CALAIS__SERIAL_MISSING
		       : e == ERROR_ACCESS_DENIED || e == ERROR_SHARING_VIOLATION ? CALAIS__SERIAL_BUSY
		                                                                  : CALAIS__SERIAL_ERROR;
	}
	calais__serial_t s = calloc(1, sizeof(*s));
	if (!s) {
		CloseHandle(h);
		return CALAIS__SERIAL_ERROR;
	}
	/* Opening a tty raises both lines on POSIX; the same here. */
	*s = (struct calais__serial_port){ .h = h, .rts = true, .dtr = true, .write_ms = 1 };
	enum calais__serial_status st = calais__serial_configure(s, bps, parity, stop_bits, mark_errors);
	if (st != CALAIS__SERIAL_OK) {
		CloseHandle(h);
		free(s);
		return st;
	}
	PurgeComm(h, PURGE_RXCLEAR | PURGE_TXCLEAR);
	ClearCommError(h, NULL, NULL);
	*out = s;
	return CALAIS__SERIAL_OK;
}

static inline void calais__serial_close(calais__serial_t s)
{
	CloseHandle(s->h);
	free(s);
}

static inline void calais__serial_flush(calais__serial_t s)
{
	PurgeComm(s->h, PURGE_RXCLEAR);
	ClearCommError(s->h, NULL, NULL);
	s->npend = 0;
}

/* Sets the timeouts of the next ReadFile and WriteFile where they changed. Reads: with
 * ReadIntervalTimeout and ReadTotalTimeoutMultiplier both MAXDWORD, ReadFile returns at
 * once what is waiting, else the first byte(s) to arrive within read_ms, else nothing. */
static inline bool calais__serial_timeouts(calais__serial_t s, DWORD read_ms, DWORD write_ms)
{
	if (read_ms > MAXDWORD - 1)
		read_ms = MAXDWORD - 1;
	if (write_ms == 0 || write_ms > MAXDWORD - 1)
		write_ms = write_ms ? MAXDWORD - 1 : 1; /* 0 would mean no timeout at all */
	if (s->timeouts_set && read_ms == s->read_ms && write_ms == s->write_ms)
		return true;
	COMMTIMEOUTS t = {
		.ReadIntervalTimeout = MAXDWORD,
		.ReadTotalTimeoutMultiplier = read_ms ? MAXDWORD : 0, /* 0, 0: return at once */
		.ReadTotalTimeoutConstant = read_ms,
		.WriteTotalTimeoutMultiplier = 0,
		.WriteTotalTimeoutConstant = write_ms,
	};
	if (!SetCommTimeouts(s->h, &t))
		return false;
	s->read_ms = read_ms;
	s->write_ms = write_ms;
	s->timeouts_set = true;
	return true;
}

/* Writes all of b (within timeout_ms). */
static inline enum calais__serial_status calais__serial_write(calais__serial_t s,
                                                              const uint8_t *b, size_t n,
                                                              uint32_t timeout_ms)
{
	if (!calais__serial_timeouts(s, s->read_ms, timeout_ms))
		return calais__serial_win_status(GetLastError());
	while (n) {
		DWORD w = 0, chunk = n > 0x10000u ? 0x10000u : (DWORD)n;
		if (!WriteFile(s->h, b, chunk, &w, NULL))
			return calais__serial_win_status(GetLastError());
		if (w == 0)
			return CALAIS__SERIAL_TIMEOUT;
		b += w;
		n -= w;
	}
	return CALAIS__SERIAL_OK;
}

/*
 * Reads exactly n bytes, each within timeout_ms of the previous one.
 *
 * mark_errors: Windows has no PARMRK. The port checks parity (fParity) and keeps the
 * bytes; after each byte ClearCommError says whether a parity or framing error was seen,
 * and the byte is handed out as FF 00 c, a real FF as FF FF, the stream the POSIX side
 * reads. The gap: the error flag belongs to the port, not to a byte, so when several
 * bytes were already queued an error is charged to the one read just before it was
 * noticed. A direct UART card reader's half-duplex, byte-by-byte exchanges rarely queue
 * more than one byte; IOCTL_SERIAL_LSRMST_INSERT would be exact but few USB-serial drivers
 * (and not wine) implement it.
 */
static inline enum calais__serial_status calais__serial_read(calais__serial_t s, uint8_t *b,
                                                             size_t n, uint32_t timeout_ms)
{
	while (n) {
		if (s->npend) {
			*b++ = s->pend[0];
			n--;
			s->pend[0] = s->pend[1];
			s->npend--;
			continue;
		}
		if (!calais__serial_timeouts(s, timeout_ms, s->write_ms))
			return calais__serial_win_status(GetLastError());
		DWORD want = s->mark ? 1 : n > 0x10000u ? 0x10000u : (DWORD)n, got = 0;
		if (!ReadFile(s->h, b, want, &got, NULL))
			return calais__serial_win_status(GetLastError());
		if (got == 0)
			return CALAIS__SERIAL_TIMEOUT;
		if (s->mark) {
			DWORD errs = 0;
			ClearCommError(s->h, &errs, NULL);
			uint8_t c = *b;
			if (errs & (CE_RXPARITY | CE_FRAME)) {
				*b = 0xFF;
				s->pend[0] = 0x00;
				s->pend[1] = c;
				s->npend = 2;
			} else if (c == 0xFF) {
				s->pend[0] = 0xFF;
				s->npend = 1;
			}
		}
		b += got;
		n -= got;
	}
	return CALAIS__SERIAL_OK;
}

/* Drops whatever is waiting in both directions. */
static inline void calais__serial_discard(calais__serial_t s)
{
	PurgeComm(s->h, PURGE_RXCLEAR | PURGE_TXCLEAR);
	ClearCommError(s->h, NULL, NULL);
	s->npend = 0;
}

/* Drives RTS / DTR (true: asserted). Ports without modem lines ignore it. */
static inline void calais__serial_rts(calais__serial_t s, bool on)
{
	s->rts = on;
	EscapeCommFunction(s->h, on ? SETRTS : CLRRTS);
}
static inline void calais__serial_dtr(calais__serial_t s, bool on)
{
	s->dtr = on;
	EscapeCommFunction(s->h, on ? SETDTR : CLRDTR);
}

/* Reads the modem status lines; CALAIS__SERIAL_ERROR where the port has none. */
static inline enum calais__serial_status calais__serial_modem(calais__serial_t s, unsigned *lines)
{
	DWORD bits = 0;
	if (!GetCommModemStatus(s->h, &bits))
		return calais__serial_win_status(GetLastError());
	*lines = (bits & MS_CTS_ON ? CALAIS__MODEM_CTS : 0) | (bits & MS_DSR_ON ? CALAIS__MODEM_DSR : 0) |
	         (bits & MS_RLSD_ON ? CALAIS__MODEM_CD : 0) | (bits & MS_RING_ON ? CALAIS__MODEM_RI : 0);
	return CALAIS__SERIAL_OK;
}
#else
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

typedef int calais__serial_t;

static inline speed_t calais__serial_speed(uint32_t bps)
{
	switch (bps) {
	case 9600: return B9600;
	case 19200: return B19200;
	case 38400: return B38400;
	case 57600: return B57600;
	default: return B115200;
	}
}

/* Line settings: raw, 8 data bits, the rate, parity and stop bits asked for,
 * CLOCAL|CREAD. mark_errors: characters received with a parity or framing error come as
 * FF 00 <char>, and a real FF as FF FF (PARMRK), for protocols that must see them. */
static inline enum calais__serial_status calais__serial_configure(calais__serial_t fd, uint32_t bps,
                                                                  enum calais__serial_parity parity,
                                                                  unsigned stop_bits,
                                                                  bool mark_errors)
{
	struct termios t;
	if (tcgetattr(fd, &t) != 0)
		return CALAIS__SERIAL_ERROR;
	cfmakeraw(&t);
	t.c_cflag |= CLOCAL | CREAD;
	t.c_cflag &= ~(tcflag_t)(CSTOPB | PARENB | PARODD | CSIZE);
	t.c_cflag |= CS8;
	if (stop_bits == 2)
		t.c_cflag |= CSTOPB;
	if (parity != CALAIS__PARITY_NONE)
		t.c_cflag |= PARENB | (parity == CALAIS__PARITY_ODD ? PARODD : 0);
	if (mark_errors && parity != CALAIS__PARITY_NONE) {
		t.c_iflag |= INPCK | PARMRK;
		t.c_iflag &= ~(tcflag_t)(IGNPAR | ISTRIP);
	}
	t.c_cc[VMIN] = 0;
	t.c_cc[VTIME] = 0;
	cfsetispeed(&t, calais__serial_speed(bps));
	cfsetospeed(&t, calais__serial_speed(bps));
	if (tcsetattr(fd, TCSANOW, &t) == 0)
		return CALAIS__SERIAL_OK;
	/* A pseudo-terminal has no parity: Linux drops PARENB and glibc reports EINVAL when
	 * nothing else changed. Everything else is in force, and the bytes pass. */
	struct termios now;
	if (errno == EINVAL && parity != CALAIS__PARITY_NONE && tcgetattr(fd, &now) == 0 &&
	    !(now.c_cflag & PARENB) && cfgetospeed(&now) == cfgetospeed(&t))
		return CALAIS__SERIAL_OK;
	return CALAIS__SERIAL_ERROR;
}

/* Opens the port exclusively (TIOCEXCL), configured as calais__serial_configure() does,
 * flushed. */
static inline enum calais__serial_status calais__serial_open(const char *path, uint32_t bps,
                                                             enum calais__serial_parity parity,
                                                             unsigned stop_bits, bool mark_errors,
                                                             calais__serial_t *out)
{
	int fd = open(path, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT || errno == ENXIO || errno == ENODEV ? CALAIS__SERIAL_MISSING
		       : errno == EACCES || errno == EPERM                  ? CALAIS__SERIAL_ACCESS
		       : errno == EBUSY                                     ? CALAIS__SERIAL_BUSY
		                                                            : CALAIS__SERIAL_ERROR;
	if (ioctl(fd, TIOCEXCL) != 0 && errno == EBUSY) {
		close(fd);
		return CALAIS__SERIAL_BUSY;
	}
	if (calais__serial_configure(fd, bps, parity, stop_bits, mark_errors) != CALAIS__SERIAL_OK) {
		close(fd);
		return CALAIS__SERIAL_ERROR;
	}
	tcflush(fd, TCIOFLUSH);
	*out = fd;
	return CALAIS__SERIAL_OK;
}

static inline void calais__serial_close(calais__serial_t s)
{
	close(s);
}

static inline void calais__serial_flush(calais__serial_t s)
{
	tcflush(s, TCIFLUSH);
}

/* Writes all of b (within timeout_ms). */
static inline enum calais__serial_status calais__serial_write(calais__serial_t s,
                                                              const uint8_t *b, size_t n,
                                                              uint32_t timeout_ms)
{
	while (n) {
		ssize_t w = write(s, b, n);
		if (w > 0) {
			b += w;
			n -= (size_t)w;
			continue;
		}
		if (w < 0 && errno != EAGAIN && errno != EINTR)
			return errno == EIO || errno == ENXIO ? CALAIS__SERIAL_MISSING : CALAIS__SERIAL_ERROR;
		struct pollfd p = { s, POLLOUT, 0 };
		int r = poll(&p, 1, (int)timeout_ms);
		if (r == 0)
			return CALAIS__SERIAL_TIMEOUT;
		if (r < 0 && errno != EINTR)
			return CALAIS__SERIAL_ERROR;
	}
	return CALAIS__SERIAL_OK;
}

/* Reads exactly n bytes, each within timeout_ms of the previous one. */
static inline enum calais__serial_status calais__serial_read(calais__serial_t s, uint8_t *b,
                                                             size_t n, uint32_t timeout_ms)
{
	while (n) {
		struct pollfd p = { s, POLLIN, 0 };
		int r = poll(&p, 1, (int)timeout_ms);
		if (r == 0)
			return CALAIS__SERIAL_TIMEOUT;
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return CALAIS__SERIAL_ERROR;
		}
		if (p.revents & (POLLHUP | POLLERR | POLLNVAL) && !(p.revents & POLLIN))
			return CALAIS__SERIAL_MISSING;
		ssize_t got = read(s, b, n);
		if (got > 0) {
			b += got;
			n -= (size_t)got;
		} else if (got == 0 || (errno != EAGAIN && errno != EINTR)) {
			return got == 0 || errno == EIO || errno == ENXIO ? CALAIS__SERIAL_MISSING
			                                                  : CALAIS__SERIAL_ERROR;
		}
	}
	return CALAIS__SERIAL_OK;
}

/* Drops whatever is waiting in both directions. */
static inline void calais__serial_discard(calais__serial_t s)
{
	tcflush(s, TCIOFLUSH);
}

/* Drives RTS / DTR (true: asserted). Ports without modem lines (a pseudo-terminal)
 * ignore it. */
static inline void calais__serial_rts(calais__serial_t s, bool on)
{
	int bit = TIOCM_RTS;
	ioctl(s, on ? TIOCMBIS : TIOCMBIC, &bit);
}
static inline void calais__serial_dtr(calais__serial_t s, bool on)
{
	int bit = TIOCM_DTR;
	ioctl(s, on ? TIOCMBIS : TIOCMBIC, &bit);
}

/* Reads the modem status lines; CALAIS__SERIAL_ERROR where the port has none. */
static inline enum calais__serial_status calais__serial_modem(calais__serial_t s, unsigned *lines)
{
	int bits = 0;
	if (ioctl(s, TIOCMGET, &bits) != 0)
		return errno == EIO || errno == ENXIO ? CALAIS__SERIAL_MISSING : CALAIS__SERIAL_ERROR;
	*lines = (bits & TIOCM_CTS ? CALAIS__MODEM_CTS : 0) | (bits & TIOCM_DSR ? CALAIS__MODEM_DSR : 0) |
	         (bits & TIOCM_CD ? CALAIS__MODEM_CD : 0) | (bits & TIOCM_RI ? CALAIS__MODEM_RI : 0);
	return CALAIS__SERIAL_OK;
}
#endif

#endif
