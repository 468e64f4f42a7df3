/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The ISO/IEC 7816-3 engine's internal interface: ATR parsing, protocol and parameter
 * selection (PPS), T=0 and T=1 over a transport the caller supplies. No I/O of its own;
 * the core and the backends reach it through lib/calais-internal.h, which includes this. */
#ifndef CALAIS_ISO7816_H
#define CALAIS_ISO7816_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "calais/pcsc/winscard.h"

/* ---- ATR -------------------------------------------------------------------------- */

/* A parsed ATR (lib/iso7816/atr.c). Defaults fill whatever the card leaves out. */
#define CALAIS__ATR_MAX_GROUPS 16
struct calais__atr_group {
	uint8_t present;  /* bit k: byte k (TA, TB, TC, TD) present */
	uint8_t byte[4];
	uint8_t t_next;   /* the protocol TD names (when TD is present) */
};
struct calais__atr {
	uint8_t raw[MAX_ATR_SIZE]; /* decoded to the direct convention's byte values */
	size_t len;
	bool inverse;   /* TS = 3F */
	bool converted; /* received as 03 ... and decoded */
	struct calais__atr_group groups[CALAIS__ATR_MAX_GROUPS];
	unsigned n_groups;
	size_t hist_offset, hist_len;
	bool has_tck, unexpected_tck;
	uint8_t tck;
	uint16_t protocols;     /* bit t: T=t offered (bit 15: global T=15 bytes) */
	uint8_t first_protocol; /* TD1's protocol, T=0 without TD1 */
	/* Global parameters. */
	bool ta1_present;
	uint8_t fi_index, di_index;
	uint16_t fi;
	uint8_t di;
	uint32_t fmax_khz;
	uint8_t n;              /* extra guard time (TC1) */
	bool specific, specific_changeable, specific_implicit; /* TA2 */
	uint8_t specific_protocol;
	uint8_t wi;             /* T=0 waiting integer (TC2), default 10 */
	/* T=1. */
	uint8_t ifsc, bwi, cwi; /* defaults 32, 4, 13 */
	bool edc_crc;
	/* T=15. */
	uint8_t clock_stop;      /* XI: 0 unsupported, 1 L, 2 H, 3 no preference */
	uint8_t class_indicator; /* UI: bit 0 class A, 1 B, 2 C */
	uint8_t spu;
	bool interface_ok;  /* TS to the last TD read: protocols and TA2 are known */
	const char *reason; /* why the ATR was rejected */
};
LONG calais__atr_parse(const uint8_t *atr, size_t len, struct calais__atr *out);
/* How long the ATR whose first n bytes are b will be, as far as they tell (read more
 * until it returns n or less). Bytes in the direct convention's values. A result over
 * MAX_ATR_SIZE is a malformed ATR. */
size_t calais__atr_expected(const uint8_t *b, size_t n);
uint8_t calais__atr_inverse_byte(uint8_t b);
/* Fi and Di for TA1's nibbles (ISO/IEC 7816-3 tables 7 and 8); 0 for reserved values. */
uint16_t calais__atr_fi(uint8_t index);
uint8_t calais__atr_di(uint8_t index);

/* PPS (lib/iso7816/pps.c). What the reader can do: its clock and the data rates it runs. */
struct calais__pps_caps {
	uint32_t clock_khz;         /* 0: 4000 */
	uint32_t max_rate_bps;      /* 0: no limit */
	const uint32_t *rates_bps;  /* exact rates the reader supports; NULL: any */
	size_t n_rates;
	bool always_pps;            /* send PPS even when the defaults would do */
};
/* The parameters in force after protocol selection, for the transport. */
struct calais__pps_result {
	uint8_t protocol;          /* 0 or 1 */
	uint8_t fi_index, di_index;
	uint16_t fi;
	uint8_t di;
	uint32_t clock_khz, rate_bps, etu_ns;
	uint8_t guard_n;           /* extra guard time N */
	uint32_t wt_ms;            /* T=0: WT; T=1: BWT */
	uint32_t cwt_ms;           /* T=1 */
	uint8_t ifsc, bwi, cwi;    /* T=1 */
	bool edc_crc;              /* T=1 */
};
/* Builds the PPS request for `protocol` (0 or 1); *req_len 0 when none is needed.
 * result gets the parameters that apply if the card accepts it. */
LONG calais__pps_request(const struct calais__atr *a, uint8_t protocol,
                         const struct calais__pps_caps *caps, uint8_t req[4], size_t *req_len,
                         struct calais__pps_result *result);
/* Checks the card's PPS answer: SCARD_S_SUCCESS with the parameters in force (full or
 * partial acceptance), SCARD_E_PROTO_MISMATCH (protocol refused), SCARD_F_COMM_ERROR
 * (malformed answer). */
LONG calais__pps_check(const uint8_t *req, size_t req_len, const uint8_t *resp, size_t resp_len,
                       const struct calais__atr *a, uint32_t clock_khz,
                       struct calais__pps_result *result);
void calais__pps_params(const struct calais__atr *a, uint8_t protocol, uint8_t fi_index,
                        uint8_t di_index, uint32_t clock_khz, struct calais__pps_result *out);

/* A command APDU split into its parts (ISO/IEC 7816-3 12.1, cases 1 to 4). */
struct calais__apdu {
	unsigned cse;   /* 1, 2, 3 or 4 */
	bool extended;  /* extended length fields */
	size_t lc, le;  /* le: 256 or 65536 for a 00 field */
	const uint8_t *data;
};
LONG calais__apdu_parse(const uint8_t *b, size_t n, struct calais__apdu *a);

/* T=0 (lib/iso7816/t0.c) over a transport: either `tpdu` (a reader exchanging whole TPDUs, e.g.
 * CCID TPDU level) or `send`/`recv` (a byte link: CCID character level, a UART). */
struct calais__t0_io {
	void *user;
	LONG (*tpdu)(void *user, const uint8_t *tpdu, size_t n, uint8_t *resp, size_t *resp_len,
	             uint32_t timeout_ms);
	LONG (*send)(void *user, const uint8_t *b, size_t n);
	/* Receives exactly n bytes or fails (SCARD_E_TIMEOUT after timeout_ms). */
	LONG (*recv)(void *user, uint8_t *b, size_t n, uint32_t timeout_ms);
	uint32_t wt_ms;          /* the waiting time WT from the protocol parameters */
	unsigned max_nulls;      /* NULL procedure bytes tolerated in a row */
	bool auto_get_response;  /* follow 61xx and 6Cxx (on by default in readers) */
	/* The exchange's bounds: every wait is cut to what is left before deadline_ms
	 * (calais__now_ms() clock; 0: none), and the exchange ends with SCARD_E_TIMEOUT once
	 * it has passed; cancelled (optional) is asked between waits and ends it with
	 * SCARD_E_CANCELLED. The transport still ends a wait in progress on cancel itself. */
	uint64_t deadline_ms;
	bool (*cancelled)(void *user);
};
/* One APDU: case mapping, 61xx/6Cxx, ENVELOPE for extended APDUs. Bounded by the fields
 * above: NULL bytes (max_nulls in a row, their total wait by the deadline), 61xx rounds
 * (256), every byte or TPDU wait (WT, cut to the deadline). */
LONG calais__t0_transceive(const struct calais__t0_io *io, const uint8_t *apdu, size_t n,
                           uint8_t *resp, size_t *resp_len);

/* T=1 (lib/iso7816/t1.c). The transport exchanges whole blocks (send one, receive one within
 * timeout_ms); a byte link reads the prologue, then LEN + EDC bytes. */
struct calais__t1 {
	void *user;
	LONG (*xfer)(void *user, const uint8_t *blk, size_t n, uint8_t *rx, size_t *rx_len,
	             uint32_t timeout_ms);
	/* A byte link instead (xfer NULL): recv gets exactly n bytes or SCARD_E_TIMEOUT. */
	LONG (*send)(void *user, const uint8_t *b, size_t n);
	LONG (*recv)(void *user, uint8_t *b, size_t n, uint32_t timeout_ms);
	uint32_t bwt_ms;  /* from the protocol parameters; WTX multiplies it */
	uint32_t cwt_ms;  /* between characters on a byte link */
	uint8_t nad;      /* node address byte we send (00: none) */
	const char *name; /* the reader, for log lines (NULL: none) */
	/* The exchange's bounds, set by the caller before each call (kept by init): every
	 * block and character wait is cut to what is left before deadline_ms (calais__now_ms()
	 * clock; 0: none), and the call ends with SCARD_E_TIMEOUT once it has passed;
	 * cancelled (optional) is asked before each block and ends the call with
	 * SCARD_E_CANCELLED. The transport still ends a wait in progress on cancel itself. */
	uint64_t deadline_ms;
	bool (*cancelled)(void *user);
	/* State from here on, reset by calais__t1_init(). */
	uint8_t ns, nr;
	uint8_t ifsc, ifsd;
	bool crc;
	uint8_t last[3 + 254 + 2];   /* the last block sent: resent after an invalid answer */
	size_t last_len;
	uint8_t last_i[3 + 254 + 2]; /* the last I-block sent: resent when an R-block asks */
	size_t last_i_len;
	uint8_t rx_err;              /* why the last answer was invalid: R-block code 1 or 2 */
	/* Per call: S-requests and empty chained I-blocks counted against their caps, the
	 * deadline passed. */
	unsigned n_wtx, n_wtx_quick, n_ifs, n_empty;
	uint64_t sent_us; /* when the last block went out */
	bool expired;
};
/* The caps on the card's S-requests within one call (one APDU, an IFSD request or an
 * ABORT); beyond one, the call ends with SCARD_F_COMM_ERROR and a warning:
 * - S(WTX) asked again "at once" (within a tenth of BWT of our block, so the time it
 *   was granted went unused) more than CALAIS__T1_MAX_WTX_QUICK times in a row: a storm.
 *   A slow card asking once per BWT (an RSA key generation) is not one;
 * - S(WTX) more than CALAIS__T1_MAX_WTX times in all (over 5 minutes at the shortest BWT
 *   of a 4 MHz card, 89 ms); the deadline is the bound that normally ends such a call;
 * - S(IFS) more than CALAIS__T1_MAX_IFS times (a card sets its IFSC once);
 * - chained I-blocks with LEN 0 more than CALAIS__T1_MAX_EMPTY times in a row (allowed
 *   within a chain, 11.6.2.3, but a card sending only those never ends); the chain is
 *   aborted (S(ABORT)) first, so the next call starts in step. */
#define CALAIS__T1_MAX_WTX_QUICK 8
#define CALAIS__T1_MAX_WTX 4096
#define CALAIS__T1_MAX_IFS 16
#define CALAIS__T1_MAX_EMPTY 16
/* An information field size as the engine uses it, from any source (ATR, PPS, CCID,
 * S(IFS)): 1..254 (FF is reserved: 254; 0 is none given: the default 32). */
uint8_t calais__t1_ifs(unsigned v);
void calais__t1_init(struct calais__t1 *t, const struct calais__atr *a);
/* Host-initiated ABORT of a chain (S(ABORT request)); RESYNCH when unanswered. */
LONG calais__t1_abort(struct calais__t1 *t);
/* S(RESYNCH request) (11.6.3.2): both sides' sequence numbers back to 0, for a caller
 * that exchanged a block outside the engine and lost step (SCARD_S_SUCCESS when the card
 * answered, SCARD_W_UNRESPONSIVE_CARD after three tries). */
LONG calais__t1_resynch(struct calais__t1 *t);
/* IFSD request at start (11.4.2), unless the reader does it itself; ifsd 1..254. */
LONG calais__t1_set_ifsd(struct calais__t1 *t, uint8_t ifsd);
/* One APDU of any length (chained by IFSC), the answer reassembled. An answer longer
 * than *resp_len: SCARD_E_INSUFFICIENT_BUFFER, the card's chain aborted (S(ABORT)). After
 * RESYNCH failed three times: SCARD_W_UNRESPONSIVE_CARD (the caller deactivates the card,
 * 11.6.3.2). */
LONG calais__t1_transceive(struct calais__t1 *t, const uint8_t *apdu, size_t n, uint8_t *resp,
                           size_t *resp_len);
LONG calais__t1_resend(struct calais__t1 *t, uint8_t *rx, size_t *rx_len, uint32_t wtx);
size_t calais__t1_edc(bool crc, const uint8_t *b, size_t n, uint8_t out[2]);

/* What the core needs from an ATR to choose a protocol (lib/iso7816/atr.c). */
struct calais__atr_info {
	uint32_t protocols;      /* SCARD_PROTOCOL_T0/T1 bits offered */
	uint32_t default_proto;  /* the first offered protocol (T=0 when none is named) */
	bool specific;           /* TA2 present: specific mode, no PPS */
	uint32_t specific_proto; /* the protocol TA2 names */
};
LONG calais__atr_protocols(const uint8_t *atr, size_t len, struct calais__atr_info *out);

#endif /* CALAIS_ISO7816_H */
