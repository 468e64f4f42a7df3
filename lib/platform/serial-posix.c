/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Serial ports on POSIX (lib/platform/serial.h): termios on a file descriptor opened
 * non-blocking, every wait a poll() with the caller's timeout. errno is translated to a
 * PC/SC code, and logged, in one place: native(). */
#include "calais-internal.h"
#include "platform/serial.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

struct calais__serial {
	int fd;
	char path[]; /* for logs */
};

/* The PC/SC code for errno `e` from `what` on `path`, logged with it (debug level when
 * opening: a missing port is tried again every few seconds, and the backend says once
 * why it is unavailable). */
static LONG native(const char *path, const char *what, int e, bool opening)
{
	LONG rv;
	switch (e) {
	case ENOENT:
	case ENXIO:
	case ENODEV:
	case EIO: /* a pty whose other side closed, a USB-serial adapter pulled */
		rv = SCARD_E_READER_UNAVAILABLE;
		break;
	case EACCES:
	case EPERM:
		rv = SCARD_E_NO_ACCESS;
		break;
	case EBUSY:
		rv = SCARD_E_SHARING_VIOLATION;
		break;
	case ENOMEM:
		rv = SCARD_E_NO_MEMORY;
		break;
	default:
		rv = SCARD_F_COMM_ERROR;
		break;
	}
	CALAIS__LOG(opening ? CALAIS_LOG_DEBUG : CALAIS_LOG_INFO, "serial", "%s: %s: %s (errno %d)", path, what, strerror(e), e);
	return rv;
}

static speed_t speed(uint32_t bps)
{
	switch (bps) {
	case 9600: return B9600;
	case 19200: return B19200;
	case 38400: return B38400;
	case 57600: return B57600;
	default: return B115200;
	}
}

static LONG configure(int fd, const char *path, uint32_t bps, enum calais__serial_parity parity,
                      unsigned stop_bits, bool mark_errors, bool opening)
{
	struct termios t;
	if (tcgetattr(fd, &t) != 0)
		return native(path, "tcgetattr", errno, opening);
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
	cfsetispeed(&t, speed(bps));
	cfsetospeed(&t, speed(bps));
	if (tcsetattr(fd, TCSANOW, &t) == 0)
		return SCARD_S_SUCCESS;
	int e = errno;
	/* A pseudo-terminal has no parity: Linux drops PARENB and glibc reports EINVAL when
	 * nothing else changed. Everything else is in force, and the bytes pass. */
	struct termios now;
	if (e == EINVAL && parity != CALAIS__PARITY_NONE && tcgetattr(fd, &now) == 0 &&
	    !(now.c_cflag & PARENB) && cfgetospeed(&now) == cfgetospeed(&t))
		return SCARD_S_SUCCESS;
	return native(path, "tcsetattr", e, opening);
}

LONG calais__serial_configure(calais__serial_t *s, uint32_t bps, enum calais__serial_parity parity,
                              unsigned stop_bits, bool mark_errors)
{
	return configure(s->fd, s->path, bps, parity, stop_bits, mark_errors, false);
}

LONG calais__serial_open(const char *path, uint32_t bps, enum calais__serial_parity parity,
                         unsigned stop_bits, bool mark_errors, calais__serial_t **out)
{
	size_t len = strlen(path);
	calais__serial_t *s = malloc(sizeof(*s) + len + 1);
	if (!s)
		return SCARD_E_NO_MEMORY;
	memcpy(s->path, path, len + 1);
	s->fd = open(path, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
	if (s->fd < 0) {
		LONG rv = native(path, "open", errno, true);
		free(s);
		return rv;
	}
	LONG rv = SCARD_S_SUCCESS;
	if (ioctl(s->fd, TIOCEXCL) != 0 && errno == EBUSY)
		rv = native(path, "TIOCEXCL", EBUSY, true);
	if (rv == SCARD_S_SUCCESS)
		rv = configure(s->fd, path, bps, parity, stop_bits, mark_errors, true);
	if (rv != SCARD_S_SUCCESS) {
		close(s->fd);
		free(s);
		/* A device that is there but will not be set up is no use as a reader port. */
		return rv == SCARD_E_READER_UNAVAILABLE || rv == SCARD_E_SHARING_VIOLATION
		               ? rv
		               : SCARD_F_COMM_ERROR;
	}
	tcflush(s->fd, TCIOFLUSH);
	*out = s;
	return SCARD_S_SUCCESS;
}

void calais__serial_close(calais__serial_t *s)
{
	close(s->fd);
	free(s);
}

void calais__serial_flush(calais__serial_t *s)
{
	tcflush(s->fd, TCIFLUSH);
}

void calais__serial_discard(calais__serial_t *s)
{
	tcflush(s->fd, TCIOFLUSH);
}

LONG calais__serial_write(calais__serial_t *s, const uint8_t *b, size_t n, size_t *done,
                          uint32_t timeout_ms)
{
	size_t k = 0;
	LONG rv = SCARD_S_SUCCESS;
	while (k < n) {
		ssize_t w = write(s->fd, b + k, n - k);
		if (w > 0) {
			k += (size_t)w;
			continue;
		}
		if (w < 0 && errno != EAGAIN && errno != EINTR) {
			rv = native(s->path, "write", errno, false);
			break;
		}
		struct pollfd p = { s->fd, POLLOUT, 0 };
		int r = poll(&p, 1, (int)timeout_ms);
		if (r == 0) {
			rv = SCARD_E_TIMEOUT;
			break;
		}
		if (r < 0 && errno != EINTR) {
			rv = native(s->path, "poll", errno, false);
			break;
		}
	}
	if (done)
		*done = k;
	return rv;
}

LONG calais__serial_read(calais__serial_t *s, uint8_t *b, size_t n, size_t *got,
                         uint32_t timeout_ms)
{
	size_t done = 0;
	LONG rv = SCARD_S_SUCCESS;
	while (done < n) {
		struct pollfd p = { s->fd, POLLIN, 0 };
		int r = poll(&p, 1, (int)timeout_ms);
		if (r == 0) {
			rv = SCARD_E_TIMEOUT;
			break;
		}
		if (r < 0) {
			if (errno == EINTR)
				continue;
			rv = native(s->path, "poll", errno, false);
			break;
		}
		if (p.revents & (POLLHUP | POLLERR | POLLNVAL) && !(p.revents & POLLIN)) {
			/* The other side of a pty closed, or the device went away. */
			rv = native(s->path, "poll", p.revents & POLLNVAL ? EBADF : EIO, false);
			break;
		}
		ssize_t k = read(s->fd, b + done, n - done);
		if (k > 0) {
			done += (size_t)k;
		} else if (k == 0) {
			rv = native(s->path, "read", EIO, false); /* end of file: hung up */
			break;
		} else if (errno != EAGAIN && errno != EINTR) {
			rv = native(s->path, "read", errno, false);
			break;
		}
	}
	if (got)
		*got = done;
	return rv;
}

void calais__serial_rts(calais__serial_t *s, bool on)
{
	int bit = TIOCM_RTS;
	ioctl(s->fd, on ? TIOCMBIS : TIOCMBIC, &bit);
}

void calais__serial_dtr(calais__serial_t *s, bool on)
{
	int bit = TIOCM_DTR;
	ioctl(s->fd, on ? TIOCMBIS : TIOCMBIC, &bit);
}

LONG calais__serial_modem(calais__serial_t *s, unsigned *lines)
{
	int bits = 0;
	if (ioctl(s->fd, TIOCMGET, &bits) != 0)
		return native(s->path, "TIOCMGET", errno, false);
	*lines = (bits & TIOCM_CTS ? CALAIS__MODEM_CTS : 0) | (bits & TIOCM_DSR ? CALAIS__MODEM_DSR : 0) |
	         (bits & TIOCM_CD ? CALAIS__MODEM_CD : 0) | (bits & TIOCM_RI ? CALAIS__MODEM_RI : 0);
	return SCARD_S_SUCCESS;
}
