/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The serial backend's internal interface: one declared reader (a port and the CCID
 * slot that drives it), shared by the GemPC framing (serial.c) and the Phoenix /
 * Smartmouse direct UART (phoenix.c). Both present a CCID message port to
 * backends/ccid/ccid-slot.c, so every protocol decision is made in one place. */
#ifndef CALAIS_SERIAL_INT_H
#define CALAIS_SERIAL_INT_H

#include "../ccid/ccid.h"
#include "platform/serial.h"

#define ser_log(level, ...)                                                          \
	do {                                                                         \
		if (CALAIS__LOG_ON(level))                                    \
			calais__log((level), "serial", __VA_ARGS__);                 \
	} while (0)

struct serial_priv;

/* Where a Phoenix reader's card-detect switch is wired (a modem status line). */
enum calais__phoenix_detect {
	CALAIS__DETECT_NONE, /* no switch: presence by a reset while the card is unused */
	CALAIS__DETECT_CTS,
	CALAIS__DETECT_DSR,
	CALAIS__DETECT_CD,
	CALAIS__DETECT_RI,
};

/* Every wait on a port is cut in slices of this length, so cancel() is seen in time. */
#define CALAIS__SERIAL_SLICE_MS 100

/* A Phoenix reader's line and card state (phoenix.c); port.lock held for all of it. */
struct calais__phoenix {
	bool smartmouse;               /* reset is active with RTS released */
	enum calais__phoenix_detect detect;
	bool detect_low;               /* the card is present while the line is low */
	uint32_t clock_khz;            /* the reader's crystal: 3571 (3.5712 MHz) by default */
	/* The card as the line sees it. */
	bool powered, inverse, suspect;
	uint32_t bps;
	uint8_t protocol;              /* from SetParameters: 0 or 1 */
	uint8_t guard_n;               /* extra guard time (TC1) */
	uint32_t etu_us;
	uint32_t wwt_ms;               /* T=0: waiting time; T=1: BWT */
	uint32_t cwt_ms;               /* T=1 character waiting time */
	uint8_t params[7];             /* the last SetParameters, for GetParameters */
	size_t params_len;
	uint64_t last_rx_us;           /* for the turnaround guard time */
	bool watch;                    /* an exchange: the detect line is read at each slice */
	LONG fatal;                    /* the code the command ends with instead of a reply */
	/* The reply built by send(), handed out by recv(). */
	uint8_t reply[CALAIS__CCID_HEADER + 271];
	size_t reply_len;
};

struct calais__sreader {
	struct serial_priv *sp;
	char path[256];
	const char *model_name;
	calais_reader *r;
	calais__serial_t *fd;
	atomic_bool open;          /* changed under port.lock, read without it */
	bool down_logged;
	/* Threading: the core runs one call at a time per reader, each taking port.lock
	 * (ccid-slot.c); the retry thread only ever try-locks it. cancel() (any thread) sets
	 * port.cancel, cleared at the start of each call. deadline_ms: the end of the
	 * exchange in progress (calais__now_ms(), 0 none), set by the calling thread. */
	_Atomic uint64_t deadline_ms;
	_Atomic uint64_t grace_ms;       /* an Abort sent at the deadline may take until then */
	atomic_bool in_call;       /* a core call is running: the retry thread leaves it be */
	bool resync;               /* a wait was cut short: drop stale input before sending */
	struct calais__ccid_desc desc;
	struct calais__ccid_strategy st;
	struct calais__ccid_port port;
	struct calais__ccid_slot slot;
	/* GemPC framing: the frame sent, for NAK and echo. */
	const struct calais__gem_model *gem;
	uint8_t last[CALAIS__CCID_HEADER + 271 + 3];
	size_t last_len;
	/* Phoenix / Smartmouse (gem NULL). */
	struct calais__phoenix ph;
};

/* Opens the declared port (2 stop bits); false with one log line (the first time)
 * when it cannot be had. */
bool calais__serial_port_open(struct calais__sreader *s, uint32_t bps,
                              enum calais__serial_parity parity, bool mark_errors,
                              calais__serial_t **fd);
/* A port lost (unplugged adapter): closed, the reader unavailable until the retry thread
 * opens it again. port.lock held. */
void calais__serial_lost(struct calais__sreader *s, const char *why);

/* Port I/O bounded by the exchange's deadline and cut in CALAIS__SERIAL_SLICE_MS slices:
 * SCARD_E_CANCELLED once cancel() was called (or the backend stops), SCARD_E_TIMEOUT
 * when a byte does not come within timeout_ms of the previous one (or of the call) or
 * the deadline passed, else the port's code. port.lock held. */
LONG calais__serial_recv(struct calais__sreader *s, uint8_t *b, size_t n, uint32_t timeout_ms);
LONG calais__serial_send(struct calais__sreader *s, const uint8_t *b, size_t n,
                         uint32_t timeout_ms);
/* The exchange's deadline has passed: a timeout is the caller's limit, not the reader's
 * silence. */
bool calais__serial_late(struct calais__sreader *s);

/* One declaration of CALAIS_SERIAL_READERS, "device:protocol[:model or options]" (the
 * device path may hold colons): the device into dev (cap bytes), *proto one of
 * "gemtwin", "phoenix", "smartmouse", *extra what follows it (NULL: nothing), pointing
 * into dev. SCARD_E_INVALID_VALUE with a log line for anything else. */
LONG calais__serial_parse_spec(const char *spec, char *dev, size_t cap, const char **proto,
                               const char **extra);

/* Phoenix (phoenix.c). Parses the options after "phoenix:" / "smartmouse:" ("cts",
 * "!dsr", "cd", "ri", "none", "khz=N", joined with '+'); SCARD_E_INVALID_VALUE with a
 * log line for anything else. */
LONG calais__phoenix_config(struct calais__sreader *s, bool smartmouse, const char *opts);
/* The synthesised descriptor (character level) and the port functions. */
void calais__phoenix_setup(struct calais__sreader *s);
/* Opens the line and checks the wiring echoes; port.lock held. */
bool calais__phoenix_open(struct calais__sreader *s);
/* The data rates the UART runs, for PPS. */
extern const uint32_t calais__phoenix_rates[];
extern const size_t calais__phoenix_n_rates;

/* Phoenix: called at each slice of a wait while watch is set; SCARD_W_REMOVED_CARD
 * when the detect line says the card went. */
LONG calais__phoenix_watch(struct calais__sreader *s);

/* Tests only: replaces the modem status read of Phoenix readers with a card-detect
 * switch of the test's (a pseudo-terminal has no modem lines). */
extern LONG (*calais__phoenix_detect_hook)(const char *path, bool *line_high);

#endif
