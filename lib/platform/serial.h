/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Serial ports for the serial reader backend: open, line settings, reads with a timeout,
 * writes, modem lines. POSIX termios only: Windows COM ports are not written yet (the
 * serial backend is not built there). */
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

#if defined(_WIN32)
typedef void *calais__serial_t;
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

/* Opens the port exclusively (TIOCEXCL), raw, 8 data bits, the parity and stop bits
 * asked for, CLOCAL|CREAD, flushed. */
static inline enum calais__serial_status calais__serial_open(const char *path, uint32_t bps,
                                                             enum calais__serial_parity parity,
                                                             unsigned stop_bits,
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
	struct termios t;
	if (tcgetattr(fd, &t) != 0) {
		close(fd);
		return CALAIS__SERIAL_ERROR;
	}
	cfmakeraw(&t);
	t.c_cflag |= CLOCAL | CREAD;
	t.c_cflag &= ~(tcflag_t)(CSTOPB | PARENB | PARODD | CSIZE);
	t.c_cflag |= CS8;
	if (stop_bits == 2)
		t.c_cflag |= CSTOPB;
	if (parity != CALAIS__PARITY_NONE)
		t.c_cflag |= PARENB | (parity == CALAIS__PARITY_ODD ? PARODD : 0);
	t.c_cc[VMIN] = 0;
	t.c_cc[VTIME] = 0;
	cfsetispeed(&t, calais__serial_speed(bps));
	cfsetospeed(&t, calais__serial_speed(bps));
	if (tcsetattr(fd, TCSANOW, &t) != 0) {
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

/* Drives RTS (true: asserted). */
static inline void calais__serial_rts(calais__serial_t s, bool on)
{
	int bit = TIOCM_RTS;
	ioctl(s, on ? TIOCMBIS : TIOCMBIC, &bit);
}
#endif

#endif
