/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Phoenix and Smartmouse readers: the UART is the card's I/O line (RX and TX tied, so
 * every byte sent comes back), RTS drives the card's reset, the reader's crystal clocks
 * the card (3.5712 MHz: 372 clocks per etu = 9600 bps). There is no reader protocol, so
 * this file plays the part of a CCID reader at character level: it answers the CCID
 * messages of backends/ccid/ccid-slot.c (IccPowerOn = reset and ATR, XfrBlock = bytes
 * out and n bytes back, SetParameters = line rate, convention and timing) by driving the
 * line. ATR parsing, PPS, T=0 and T=1 are then the same code as for every CCID reader.
 *
 * Line: 8 data bits, even parity (odd for an inverse convention card, whose bytes are
 * complemented and bit-reversed both ways), 2 stop bits: the second stop bit is the
 * ISO 7816-3 guard time; TC1's extra guard time is added between characters. Parity
 * and framing errors are marked by the UART (PARMRK) and reported as such. */
#include "serial-int.h"

#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#define RESET_MS 20           /* RST held low; ISO asks 400 clocks, adapters are slow */
#define ATR_FIRST_MS 300      /* first ATR byte: ISO allows 40000 clocks (11 ms) + latency */
#define ATR_BYTE_MS 1200      /* between ATR bytes: the initial waiting time, 9600 etu */
#define CHAR_FLOOR_MS 200     /* least wait for a character: USB-serial adapters buffer */
#define ECHO_MS 200           /* the echo of a byte is immediate; this is adapter latency */

/* CCID bError values this reader reports (CCID 1.1 table 6.2-2). */
#define ERR_CMD_NOT_SUPPORTED 0x00
#define ERR_ICC_MUTE 0xFE
#define ERR_XFR_PARITY 0xFD
#define ERR_BAD_ATR_TS 0xF8
#define ERR_BAD_ATR_TCK 0xF7
#define ERR_HW 0xFB
#define ERR_CMD_ABORTED 0xFF
#define ERR_BAD_LENGTH 1      /* 1..127: the offset of the bad field; dwLength */

LONG (*calais__phoenix_detect_hook)(const char *path, bool *line_high);

const uint32_t calais__phoenix_rates[] = { 9600, 19200, 38400, 57600, 115200 };
const size_t calais__phoenix_n_rates = CALAIS__ARRAY_SIZE(calais__phoenix_rates);

/* ---- configuration ---------------------------------------------------------------------- */

/* The UART rate within 2 % of `bps`, or 0. */
static uint32_t uart_rate(uint32_t bps)
{
	for (size_t i = 0; i < calais__phoenix_n_rates; i++) {
		uint32_t rate = calais__phoenix_rates[i];
		if (bps >= rate - rate / 50 && bps <= rate + rate / 50)
			return rate;
	}
	return 0;
}

/* The ATR's rate (F = 372, D = 1) for the reader's clock, as the UART runs it. */
static uint32_t initial_rate(uint32_t clock_khz)
{
	return uart_rate((uint32_t)((uint64_t)clock_khz * 1000u / 372u));
}

LONG calais__phoenix_config(struct calais__sreader *s, bool smartmouse, const char *opts)
{
	struct calais__phoenix *p = &s->ph;
	static const struct {
		const char *key;
		enum calais__phoenix_detect line;
	} lines[] = { { "cts", CALAIS__DETECT_CTS }, { "dsr", CALAIS__DETECT_DSR },
		      { "cd", CALAIS__DETECT_CD },   { "dcd", CALAIS__DETECT_CD },
		      { "ri", CALAIS__DETECT_RI },   { "none", CALAIS__DETECT_NONE } };
	p->smartmouse = smartmouse;
	p->detect = CALAIS__DETECT_NONE;
	p->clock_khz = 3571;
	if (!opts || !*opts)
		return SCARD_S_SUCCESS;
	char buf[128], *save = NULL;
	if (strlen(opts) >= sizeof(buf)) {
		ser_log(CALAIS_LOG_ERROR, "%s: Phoenix options too long", s->path);
		return SCARD_E_INVALID_VALUE;
	}
	snprintf(buf, sizeof(buf), "%s", opts);
	for (char *t = strtok_r(buf, "+", &save); t; t = strtok_r(NULL, "+", &save)) {
		bool low = *t == '!';
		const char *k = low ? t + 1 : t;
		bool known = false;
		for (size_t i = 0; i < CALAIS__ARRAY_SIZE(lines) && !known; i++) {
			if (strcasecmp(k, lines[i].key) == 0 &&
			    !(low && lines[i].line == CALAIS__DETECT_NONE)) {
				p->detect = lines[i].line;
				p->detect_low = low;
				known = true;
			}
		}
		if (!known && strncasecmp(t, "khz=", 4) == 0) {
			char *end;
			unsigned long khz = strtoul(t + 4, &end, 10);
			if (*end == 0 && khz >= 1000 && khz <= 20000) {
				p->clock_khz = (uint32_t)khz;
				known = true;
				if (!initial_rate(p->clock_khz)) {
					/* 6 MHz gives 16129 bit/s: a custom divisor we do not set. */
					ser_log(CALAIS_LOG_ERROR, "%s: a %lu kHz clock runs the ATR at %lu "
					        "bit/s, which is no standard UART rate", s->path, khz,
					        khz * 1000 / 372);
					return SCARD_E_INVALID_VALUE;
				}
			}
		}
		if (!known) {
			ser_log(CALAIS_LOG_ERROR, "%s: unknown Phoenix option \"%s\" (card detect line: "
			        "cts, dsr, cd, ri, with ! when active low, or none; clock: khz=N)",
			        s->path, t);
			return SCARD_E_INVALID_VALUE;
		}
	}
	return SCARD_S_SUCCESS;
}

/* ---- the line ------------------------------------------------------------------------- */

static void detect(struct calais__sreader *s, bool *present, bool *known);

static uint8_t conv(const struct calais__phoenix *p, uint8_t b)
{
	return p->inverse ? calais__atr_inverse_byte(b) : b;
}

static LONG line_set(struct calais__sreader *s)
{
	struct calais__phoenix *p = &s->ph;
	/* The UART runs the standard rates only; the rate list offered to PPS says so. */
	if (calais__serial_configure(s->fd, p->bps, p->inverse ? CALAIS__PARITY_ODD
	                                                        : CALAIS__PARITY_EVEN,
	                             2, true) != SCARD_S_SUCCESS) {
		ser_log(CALAIS_LOG_WARNING, "%s: cannot set the line to %u bps", s->path, p->bps);
		return SCARD_F_COMM_ERROR;
	}
	p->etu_us = 1000000u / (p->bps ? p->bps : 9600);
	return SCARD_S_SUCCESS;
}

/* One byte off the wire within timeout_ms (and the exchange's deadline), cancellable. */
static LONG rx_raw(struct calais__sreader *s, uint8_t *b, uint32_t timeout_ms)
{
	LONG rv = calais__serial_recv(s, b, 1, timeout_ms);
	switch (rv) {
	case SCARD_S_SUCCESS:
	case SCARD_E_TIMEOUT:
	case SCARD_E_CANCELLED:
	case SCARD_W_REMOVED_CARD:
		return rv;
	default:
		calais__serial_lost(s, "read");
		return SCARD_E_READER_UNAVAILABLE;
	}
}

LONG calais__phoenix_watch(struct calais__sreader *s)
{
	bool present, known;
	detect(s, &present, &known);
	if (!known || present)
		return SCARD_S_SUCCESS;
	ser_log(CALAIS_LOG_INFO, "%s: the card was pulled during an exchange", s->path);
	s->ph.powered = false;
	return SCARD_W_REMOVED_CARD;
}

/* One character as the wire carries it; *bad when the UART marked a parity or framing
 * error on it (PARMRK: FF 00 c; a real FF comes as FF FF). */
static LONG rx_char(struct calais__sreader *s, uint8_t *c, bool *bad, uint32_t timeout_ms)
{
	*bad = false;
	LONG rv = rx_raw(s, c, timeout_ms);
	if (rv == SCARD_S_SUCCESS && *c == 0xFF) {
		uint8_t m;
		rv = rx_raw(s, &m, ECHO_MS);
		if (rv == SCARD_S_SUCCESS && m == 0x00) {
			rv = rx_raw(s, c, ECHO_MS);
			*bad = true;
		} else if (rv == SCARD_S_SUCCESS && m != 0xFF) {
			/* Not a sequence PARMRK makes: a byte was lost. */
			*c = m;
			*bad = true;
		}
		if (rv == SCARD_E_TIMEOUT)
			rv = SCARD_F_COMM_ERROR;
	}
	if (rv == SCARD_S_SUCCESS)
		s->ph.last_rx_us = calais__now_us();
	return rv;
}

/* Sends bytes (logical values) and consumes their echo, which must be what was sent. */
static LONG tx(struct calais__sreader *s, const uint8_t *b, size_t n, uint8_t *err)
{
	struct calais__phoenix *p = &s->ph;
	*err = ERR_HW;
	/* The card turns its line around: 16 etu after its last character (22 for T=1). */
	uint64_t gap = (uint64_t)(p->protocol == 1 ? 22 : 16) * p->etu_us;
	uint64_t now = calais__now_us();
	if (now < p->last_rx_us + gap)
		calais__sleep_us((uint32_t)(p->last_rx_us + gap - now));
	if (s->resync) {
		/* The rest of an answer given up on must not pass for our echo. */
		calais__serial_flush(s->fd);
		s->resync = false;
	}
	/* TC1 (N < 255): N more etu between our characters, so one at a time. */
	uint8_t w[300];
	if (n > sizeof(w))
		return SCARD_E_INSUFFICIENT_BUFFER;
	size_t step = p->guard_n && p->guard_n != 255 ? 1 : n;
	for (size_t off = 0; off < n; off += step) {
		size_t k = n - off < step ? n - off : step;
		for (size_t i = 0; i < k; i++)
			w[i] = conv(p, b[off + i]);
		if (off && step == 1)
			calais__sleep_us(p->guard_n * p->etu_us);
		LONG rv = calais__serial_send(s, w, k, ECHO_MS);
		if (rv == SCARD_E_CANCELLED || rv == SCARD_W_REMOVED_CARD ||
		    (rv == SCARD_E_TIMEOUT && calais__serial_late(s)))
			return rv;
		if (rv != SCARD_S_SUCCESS) {
			calais__serial_lost(s, "write");
			return SCARD_E_READER_UNAVAILABLE;
		}
		for (size_t i = 0; i < k; i++) {
			uint8_t e;
			bool bad;
			rv = rx_char(s, &e, &bad, ECHO_MS + (uint32_t)(k * 12 * p->etu_us / 1000));
			if (rv == SCARD_E_TIMEOUT && !calais__serial_late(s)) {
				/* The wiring echoes every byte, card or not: silence means the port
				 * is not (or no longer) a Phoenix reader. */
				ser_log(CALAIS_LOG_WARNING, "%s: no echo of the bytes sent; the reader "
				        "is closed until its line echoes again", s->path);
				calais__serial_lost(s, "echo");
				return SCARD_E_READER_UNAVAILABLE;
			}
			if (rv != SCARD_S_SUCCESS)
				return rv;
			if (bad) {
				/* The card held the line low in the guard time: it got the byte
				 * with a parity error (T=0 error signal). */
				ser_log(CALAIS_LOG_INFO, "%s: the card signalled a parity error on a "
				        "byte sent", s->path);
				*err = ERR_XFR_PARITY;
				return SCARD_F_COMM_ERROR;
			}
			if (e != w[i]) {
				/* The byte may be a PIN digit: its value only with the trace. */
				if (calais__log_card_bytes())
					ser_log(CALAIS_LOG_WARNING, "%s: echo 0x%02X of byte 0x%02X "
					        "sent: line fault", s->path, e, w[i]);
				else
					ser_log(CALAIS_LOG_WARNING, "%s: the echo of byte %zu of %zu "
					        "sent differs: line fault", s->path, i + 1, k);
				return SCARD_F_COMM_ERROR;
			}
		}
	}
	return SCARD_S_SUCCESS;
}

/* Drives the card's reset line: Phoenix resets with RTS asserted, Smartmouse with it
 * released. */
static void rst(struct calais__sreader *s, bool active)
{
	calais__serial_rts(s->fd, active != s->ph.smartmouse);
}

/* Reset and ATR (direct-convention values in atr[]). *err: the CCID bError. */
static LONG reset_atr(struct calais__sreader *s, uint8_t *atr, size_t *len, uint8_t *err)
{
	struct calais__phoenix *p = &s->ph;
	p->powered = false;
	p->inverse = false;
	p->protocol = 0;
	p->guard_n = 0;
	p->bps = initial_rate(p->clock_khz); /* checked by the configuration */
	LONG rv = line_set(s);
	*err = ERR_HW;
	if (rv != SCARD_S_SUCCESS)
		return rv;
	rst(s, true);
	calais__serial_discard(s->fd);
	calais__sleep_us(RESET_MS * 1000);
	rst(s, false);

	uint8_t c;
	bool bad;
	rv = rx_char(s, &c, &bad, ATR_FIRST_MS);
	if (rv == SCARD_E_TIMEOUT) {
		*err = ERR_ICC_MUTE;
		return SCARD_W_UNRESPONSIVE_CARD;
	}
	if (rv != SCARD_S_SUCCESS)
		return rv;
	if (c == 0x03) {
		/* TS 3F read by a direct-convention UART (with a parity error at even parity). */
		p->inverse = true;
		if ((rv = line_set(s)) != SCARD_S_SUCCESS)
			return rv;
		atr[0] = 0x3F;
	} else if (c == 0x3B && !bad) {
		atr[0] = 0x3B;
	} else {
		char val[8] = "";
		if (calais__log_card_bytes())
			snprintf(val, sizeof(val), " 0x%02X", c);
		ser_log(CALAIS_LOG_INFO, "%s: first ATR byte%s%s is no TS (3B, or 03 for an "
		        "inverse convention 3F)", s->path, val, bad ? " with a parity error" : "");
		*err = ERR_BAD_ATR_TS;
		return SCARD_W_UNSUPPORTED_CARD;
	}
	size_t n = 1, need;
	while ((need = calais__atr_expected(atr, n)) > n) {
		if (need > MAX_ATR_SIZE) {
			ser_log(CALAIS_LOG_INFO, "%s: the ATR announces more than %d bytes", s->path,
			        MAX_ATR_SIZE);
			*err = ERR_BAD_ATR_TS;
			return SCARD_W_UNSUPPORTED_CARD;
		}
		rv = rx_char(s, &c, &bad, ATR_BYTE_MS);
		if (rv == SCARD_E_TIMEOUT) {
			ser_log(CALAIS_LOG_INFO, "%s: the ATR stops after %zu bytes", s->path, n);
			*err = ERR_ICC_MUTE;
			return SCARD_W_UNRESPONSIVE_CARD;
		}
		if (rv != SCARD_S_SUCCESS)
			return rv;
		if (bad) {
			ser_log(CALAIS_LOG_INFO, "%s: parity error in ATR byte %zu", s->path, n);
			*err = ERR_XFR_PARITY;
			return SCARD_F_COMM_ERROR;
		}
		atr[n++] = conv(p, c);
	}
	/* A T=0 card may add a TCK it need not send: take it, or it would start the next
	 * answer. */
	if (n < MAX_ATR_SIZE && rx_char(s, &c, &bad, 20) == SCARD_S_SUCCESS)
		atr[n++] = conv(p, c);
	*len = n;
	p->powered = true;
	p->suspect = false;
	/* The initial waiting time until SetParameters says otherwise. */
	p->wwt_ms = (uint32_t)(960u * 10u * 372u / p->clock_khz) + 1;
	p->cwt_ms = p->wwt_ms;
	*err = 0;
	return SCARD_S_SUCCESS;
}

/* Is a card in the reader? From the detect line when there is one. *known false: no
 * line (or one that cannot be read): the caller decides by other means. */
static void detect(struct calais__sreader *s, bool *present, bool *known)
{
	struct calais__phoenix *p = &s->ph;
	*known = false;
	if (p->detect == CALAIS__DETECT_NONE)
		return;
	bool high;
	if (calais__phoenix_detect_hook) {
		if (calais__phoenix_detect_hook(s->path, &high) != SCARD_S_SUCCESS)
			return;
	} else {
		unsigned lines = 0;
		if (calais__serial_modem(s->fd, &lines) != SCARD_S_SUCCESS) {
			ser_log(CALAIS_LOG_WARNING, "%s: the modem status lines cannot be read; "
			        "card presence by reset instead", s->path);
			p->detect = CALAIS__DETECT_NONE;
			return;
		}
		static const unsigned bit[] = { 0, CALAIS__MODEM_CTS, CALAIS__MODEM_DSR,
			                        CALAIS__MODEM_CD, CALAIS__MODEM_RI };
		high = (lines & bit[p->detect]) != 0;
	}
	*present = high != p->detect_low;
	*known = true;
}

/* ---- the CCID reader it plays -------------------------------------------------------- */

static void reply(struct calais__sreader *s, const uint8_t *cmd, uint8_t type, uint8_t status,
                  uint8_t error, uint8_t param, const uint8_t *data, size_t n)
{
	uint8_t *r = s->ph.reply;
	if (n > sizeof(s->ph.reply) - CALAIS__CCID_HEADER)
		n = sizeof(s->ph.reply) - CALAIS__CCID_HEADER;
	r[0] = type;
	r[1] = (uint8_t)n;
	r[2] = (uint8_t)(n >> 8);
	r[3] = r[4] = 0;
	r[5] = cmd[5];
	r[6] = cmd[6];
	r[7] = status;
	r[8] = error;
	r[9] = param;
	if (n)
		memcpy(r + CALAIS__CCID_HEADER, data, n);
	s->ph.reply_len = CALAIS__CCID_HEADER + n;
}

/* bmICCStatus: 0 active, 1 present and inactive, 2 absent. */
static uint8_t icc(const struct calais__sreader *s)
{
	return s->ph.powered ? 0 : 1;
}

static void fail(struct calais__sreader *s, const uint8_t *cmd, uint8_t type, uint8_t icc_status,
                 uint8_t error)
{
	reply(s, cmd, type, (uint8_t)(0x40 | icc_status), error, 0, NULL, 0);
}

static void power_on(struct calais__sreader *s, const uint8_t *cmd)
{
	bool present, known;
	detect(s, &present, &known);
	if (known && !present) {
		s->ph.powered = false;
		fail(s, cmd, CALAIS__RDR_DATA_BLOCK, 2, ERR_ICC_MUTE);
		return;
	}
	uint8_t atr[MAX_ATR_SIZE], err;
	size_t n = 0;
	LONG rv = reset_atr(s, atr, &n, &err);
	if (rv == SCARD_S_SUCCESS) {
		reply(s, cmd, CALAIS__RDR_DATA_BLOCK, 0, 0, 0, atr, n);
		return;
	}
	rst(s, true); /* a card that gave no usable ATR is held in reset */
	/* Without a detect line, a reset nobody answers means no card. */
	fail(s, cmd, CALAIS__RDR_DATA_BLOCK, err == ERR_ICC_MUTE && !known ? 2 : 1,
	     rv == SCARD_E_CANCELLED ? ERR_CMD_ABORTED : err);
}

static void slot_status(struct calais__sreader *s, const uint8_t *cmd)
{
	struct calais__phoenix *p = &s->ph;
	bool present, known;
	detect(s, &present, &known);
	uint8_t st;
	if (known) {
		if (!present)
			p->powered = false;
		st = present ? icc(s) : 2;
	} else if (p->powered && !p->suspect) {
		st = 0; /* in use: no reset to look; a card pulled shows when it goes mute */
	} else {
		/* No detect line: a reset tells whether a card is there. A card that went mute
		 * in use and answers again has lost its state: it is reported gone once, and
		 * back at the next look, as a removal and an insertion. */
		bool was_in_use = p->powered;
		uint8_t atr[MAX_ATR_SIZE], err;
		size_t n;
		LONG rv = reset_atr(s, atr, &n, &err);
		rst(s, true);
		p->powered = false;
		st = rv == SCARD_S_SUCCESS && !was_in_use ? 1 : 2;
		if (rv == SCARD_S_SUCCESS && was_in_use)
			ser_log(CALAIS_LOG_INFO, "%s: the card went mute and answers a reset again: "
			        "reported removed and reinserted", s->path);
	}
	reply(s, cmd, CALAIS__RDR_SLOT_STATUS, st, 0, 0, NULL, 0);
}

static uint32_t char_timeout(const struct calais__phoenix *p, bool first, uint8_t bwi_mult)
{
	uint32_t t = first || p->protocol == 0 ? p->wwt_ms : p->cwt_ms;
	if (first && p->protocol == 1 && bwi_mult > 1)
		t *= bwi_mult;
	return t + CHAR_FLOOR_MS;
}

/* The exchange's end by its deadline, a cancel or the card pulled: the command ends
 * with that code, and whatever the card still sends is dropped before the next one. */
static bool cut_short(struct calais__sreader *s, LONG rv, size_t got)
{
	bool late = rv == SCARD_E_TIMEOUT && !got && calais__serial_late(s);
	if (!late && rv != SCARD_W_REMOVED_CARD && rv != SCARD_E_CANCELLED)
		return false;
	s->ph.fatal = rv;
	s->resync = true;
	return true;
}

static void xfr_run(struct calais__sreader *s, const uint8_t *cmd, const uint8_t *data, size_t n)
{
	struct calais__phoenix *p = &s->ph;
	if (!p->powered) {
		fail(s, cmd, CALAIS__RDR_DATA_BLOCK, 1, ERR_ICC_MUTE);
		return;
	}
	size_t want = (size_t)cmd[8] | (size_t)cmd[9] << 8;
	uint8_t err = 0;
	LONG rv = n ? tx(s, data, n, &err) : SCARD_S_SUCCESS;
	if (cut_short(s, rv, 0))
		return;
	if (rv != SCARD_S_SUCCESS) {
		fail(s, cmd, CALAIS__RDR_DATA_BLOCK, icc(s), err);
		return;
	}
	uint8_t in[CALAIS__CCID_HEADER + 271];
	size_t cap = sizeof(s->ph.reply) - CALAIS__CCID_HEADER, got = 0;
	if (want > cap)
		want = cap;
	while (got < want) {
		uint8_t c;
		bool bad;
		rv = rx_char(s, &c, &bad, char_timeout(p, got == 0, cmd[7]));
		if (cut_short(s, rv, got))
			return;
		if (rv == SCARD_E_TIMEOUT) {
			if (got)
				break; /* fewer bytes than asked: the caller sees how many */
			/* Mute: pulled out, or broken. Without a detect line the next status look
			 * finds out with a reset. */
			p->suspect = true;
			fail(s, cmd, CALAIS__RDR_DATA_BLOCK, icc(s), ERR_ICC_MUTE);
			return;
		}
		if (rv != SCARD_S_SUCCESS) {
			fail(s, cmd, CALAIS__RDR_DATA_BLOCK, icc(s), ERR_HW);
			return;
		}
		if (bad) {
			ser_log(CALAIS_LOG_INFO, "%s: parity error in a byte from the card", s->path);
			fail(s, cmd, CALAIS__RDR_DATA_BLOCK, icc(s), ERR_XFR_PARITY);
			return;
		}
		in[got++] = conv(p, c);
	}
	reply(s, cmd, CALAIS__RDR_DATA_BLOCK, 0, 0, 0, in, got);
}

/* XfrBlock: the bytes out, n bytes back; the detect line watched meanwhile. */
static void xfr_block(struct calais__sreader *s, const uint8_t *cmd, const uint8_t *data,
                      size_t n)
{
	s->ph.watch = true;
	xfr_run(s, cmd, data, n);
	s->ph.watch = false;
}

static void set_parameters(struct calais__sreader *s, const uint8_t *cmd, const uint8_t *d,
                           size_t n)
{
	struct calais__phoenix *p = &s->ph;
	uint8_t proto = cmd[7];
	if ((proto == 0 && n < 5) || (proto == 1 && n < 7) || proto > 1) {
		fail(s, cmd, CALAIS__RDR_PARAMETERS, icc(s), ERR_BAD_LENGTH);
		return;
	}
	struct calais__pps_result r;
	struct calais__atr a;
	memset(&a, 0, sizeof(a));
	a.wi = proto == 0 ? d[3] : 10;
	a.bwi = proto == 1 ? d[3] >> 4 : 4;
	a.cwi = proto == 1 ? d[3] & 0x0F : 13;
	a.n = d[2];
	calais__pps_params(&a, proto, d[0] >> 4, d[0] & 0x0F, p->clock_khz, &r);
	uint32_t bps = uart_rate(r.rate_bps);
	if (!bps || !r.fi || !r.di) {
		ser_log(CALAIS_LOG_INFO, "%s: Fi/Di 0x%02X gives %u bps, which the UART does not run",
		        s->path, d[0], r.rate_bps);
		fail(s, cmd, CALAIS__RDR_PARAMETERS, icc(s), 10); /* bmFindexDindex */
		return;
	}
	p->protocol = proto;
	p->guard_n = d[2];
	p->bps = bps;
	if (line_set(s) != SCARD_S_SUCCESS) {
		fail(s, cmd, CALAIS__RDR_PARAMETERS, icc(s), ERR_HW);
		return;
	}
	p->wwt_ms = r.wt_ms ? r.wt_ms : 1;
	p->cwt_ms = proto == 1 ? (r.cwt_ms ? r.cwt_ms : 1) : p->wwt_ms;
	memcpy(p->params, d, proto == 0 ? 5 : 7);
	p->params_len = proto == 0 ? 5 : 7;
	ser_log(CALAIS_LOG_DEBUG, "%s: T=%u at %u bps, N %u, wait %u ms", s->path, proto, bps,
	        p->guard_n, p->wwt_ms);
	reply(s, cmd, CALAIS__RDR_PARAMETERS, icc(s), 0, proto, p->params, p->params_len);
}

/* struct calais__ccid_port send: runs the command on the line; recv hands out the reply. */
static LONG ph_send(void *user, const uint8_t *msg, size_t n, uint32_t timeout_ms)
{
	struct calais__sreader *s = user;
	(void)timeout_ms;
	if (!s->open)
		return SCARD_E_READER_UNAVAILABLE;
	if (n < CALAIS__CCID_HEADER)
		return SCARD_E_INVALID_PARAMETER;
	const uint8_t *data = msg + CALAIS__CCID_HEADER;
	size_t len = n - CALAIS__CCID_HEADER;
	s->ph.reply_len = 0;
	s->ph.fatal = SCARD_S_SUCCESS;
	switch (msg[0]) {
	case CALAIS__PC_ICC_POWER_ON:
		power_on(s, msg);
		break;
	case CALAIS__PC_ICC_POWER_OFF:
		/* No power switch: the card is held in reset. */
		if (s->open)
			rst(s, true);
		s->ph.powered = false;
		reply(s, msg, CALAIS__RDR_SLOT_STATUS, 1, 0, 0, NULL, 0);
		break;
	case CALAIS__PC_GET_SLOT_STATUS:
		slot_status(s, msg);
		break;
	case CALAIS__PC_XFR_BLOCK:
		xfr_block(s, msg, data, len);
		break;
	case CALAIS__PC_SET_PARAMETERS:
		set_parameters(s, msg, data, len);
		break;
	case CALAIS__PC_GET_PARAMETERS:
	case CALAIS__PC_RESET_PARAMETERS:
		reply(s, msg, CALAIS__RDR_PARAMETERS, icc(s), 0, s->ph.protocol, s->ph.params,
		      s->ph.params_len);
		break;
	case CALAIS__PC_ABORT:
		reply(s, msg, CALAIS__RDR_SLOT_STATUS, icc(s), 0, 0, NULL, 0);
		break;
	default:
		/* Escape, Secure, clock and rate commands: nothing to do them with. */
		fail(s, msg, msg[0] == CALAIS__PC_ESCAPE ? CALAIS__RDR_ESCAPE : CALAIS__RDR_SLOT_STATUS,
		     icc(s), ERR_CMD_NOT_SUPPORTED);
		break;
	}
	if (!s->open)
		return SCARD_E_READER_UNAVAILABLE; /* the port went away meanwhile */
	if (s->ph.fatal != SCARD_S_SUCCESS) {
		s->ph.reply_len = 0;
		return s->ph.fatal;
	}
	return SCARD_S_SUCCESS;
}

static LONG ph_recv(void *user, uint8_t *buf, size_t cap, size_t *n, uint32_t timeout_ms)
{
	struct calais__sreader *s = user;
	(void)timeout_ms;
	if (!s->ph.reply_len)
		return s->open ? SCARD_E_TIMEOUT : SCARD_E_READER_UNAVAILABLE;
	if (s->ph.reply_len > cap)
		return SCARD_F_COMM_ERROR;
	memcpy(buf, s->ph.reply, s->ph.reply_len);
	*n = s->ph.reply_len;
	s->ph.reply_len = 0;
	return SCARD_S_SUCCESS;
}

/* ---- the reader ------------------------------------------------------------------------- */

void calais__phoenix_setup(struct calais__sreader *s)
{
	struct calais__ccid_desc *d = &s->desc;
	memset(d, 0, sizeof(*d));
	d->bcd_ccid = 0x0110;
	d->voltage_support = 1; /* the reader's 5 V */
	d->protocols = 3;
	d->default_clock_khz = s->ph.clock_khz;
	d->max_clock_khz = s->ph.clock_khz;
	d->data_rate = 9600;
	d->max_data_rate = 115200;
	d->num_rates = (uint8_t)calais__phoenix_n_rates;
	d->max_ifsd = 254;
	/* Character level, automatic voltage (there is one), nothing else automatic: the
	 * host does PPS, SetParameters and the IFSD request. */
	d->features = 0x00000008;
	d->max_message_length = 271;
	d->max_busy_slots = 1;
	calais__ccid_strategy(d, &s->st);
	s->port.send = ph_send;
	s->port.recv = ph_recv;
	s->slot.rates = calais__phoenix_rates;
	s->slot.n_rates = calais__phoenix_n_rates;
}

bool calais__phoenix_open(struct calais__sreader *s)
{
	calais__serial_t *fd;
	if (!calais__serial_port_open(s, initial_rate(s->ph.clock_khz), CALAIS__PARITY_EVEN, true,
	                              &fd))
		return false;
	s->fd = fd;
	s->open = true;
	s->port.gone = false;
	s->port.cancel = false;
	struct calais__phoenix *p = &s->ph;
	p->powered = false;
	p->suspect = false;
	p->inverse = false;
	p->protocol = 0;
	p->bps = initial_rate(p->clock_khz);
	p->etu_us = 1000000u / p->bps;
	calais__serial_dtr(fd, true); /* powers the interface on many models */
	rst(s, true);
	/* The wiring echoes even with no card: a byte sent while the card is held in reset
	 * proves the port is a Phoenix reader. Bytes before the echo are skipped (a card may
	 * answer the reset that opening the port caused on some adapters). */
	static const uint8_t probe = 0x00;
	bool echoed = false;
	if (calais__serial_send(s, &probe, 1, ECHO_MS) == SCARD_S_SUCCESS) {
		/* Within ECHO_MS in all, however the noise trickles in; cancellable. */
		uint64_t until = calais__now_ms() + ECHO_MS;
		uint8_t c;
		for (unsigned i = 0; i < 64 && !echoed; i++) {
			uint64_t now = calais__now_ms();
			if (now >= until ||
			    calais__serial_recv(s, &c, 1, (uint32_t)(until - now)) != SCARD_S_SUCCESS)
				break;
			echoed = c == probe;
		}
	}
	if (!echoed) {
		calais__serial_close(fd);
		s->open = false;
		if (!s->down_logged)
			ser_log(CALAIS_LOG_WARNING, "%s: no echo: not a Phoenix/Smartmouse reader, or "
			        "not powered; the reader stays listed, unavailable, and the port is "
			        "tried again", s->path);
		s->down_logged = true;
		return false;
	}
	ser_log(CALAIS_LOG_INFO, "%s: %s reader, clock %u kHz, card detect %s", s->path,
	        s->model_name, p->clock_khz,
	        p->detect == CALAIS__DETECT_NONE ? "by reset" : "on a modem line");
	s->down_logged = false;
	return true;
}
