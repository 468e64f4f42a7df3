/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * simcard: the simulated smart card shared by the serial test peers (gemtwin-sim,
 * phoenix-sim).  One small application answers short APDUs, reached through a T=0
 * engine (TPDUs, 61xx / GET RESPONSE, 6Cxx) and a T=1 engine (blocks: I-blocks with
 * chaining both ways, R-blocks, S(IFS), S(RESYNCH), S(ABORT), S(WTX)).  The reader
 * around it (CCID frames, or a bare UART) is the simulator's business.
 *
 * The application:
 *   SELECT        00 A4 p1 p2 Lc data [Le] -> FCI 6F L 84 Lc data, 90 00
 *   READ BINARY   00 B0 hi lo Le           -> Le bytes, byte i = (offset + i) & 0xFF, 90 00
 *   GET CHALLENGE 00 84 00 00 Le           -> Le pseudo-random bytes, 90 00
 *   ECHO          80 EE 00 00 Lc data [Le] -> data (case 4) / nothing (case 3), 90 00
 *   WAIT          80 E5 00 00              -> 90 00, after a time extension (T=1:
 *                                             S(WTX request); T=0: up to the reader)
 *   HANG          80 E6 00 00              -> nothing: the card is mute until reset
 *                                             (sc->hang set; the reader stays silent)
 *   anything else                          -> 6D 00
 */
#ifndef SIMCARD_H
#define SIMCARD_H

#include <stddef.h>
#include <stdint.h>

#define SIMCARD_APDU_CAP 4096
#define SIMCARD_T1_BLOCK_CAP (3 + 255 + 2)  /* prologue, INF, CRC */

struct simcard {
    /* configuration: simcard_init() sets the defaults, the simulator may change them */
    int t1_max_inf;     /* the card sends at most this many INF bytes per block */
    int t1_ifsc;        /* largest INF the card accepts; 0: not checked */
    int t1_crc;         /* T=1 EDC is a CRC (TC3 bit 0) instead of an LRC */
    int t1_wtx_storm;   /* T=1 WAIT: every S(WTX response) gets another S(WTX request) */
    int hang;           /* HANG was received: the card is mute until its next reset */

    uint32_t rng;
    /* T=0: the answer waiting for GET RESPONSE */
    uint8_t t0_pending[258];
    size_t t0_pending_len;
    /* T=1, card side */
    struct {
        int ns, nr, ifsd;
        uint8_t rx[SIMCARD_APDU_CAP];
        size_t rx_len;
        int rx_overflow;
        uint8_t tx[SIMCARD_APDU_CAP];
        size_t tx_len, tx_off;
        int tx_active, wtx_pending;
        uint8_t last[SIMCARD_T1_BLOCK_CAP];  /* resent on request */
        size_t last_len;
    } t1;
};

/* T=0 command kinds, judged from the 5-byte header (see simcard_t0_kind) */
enum simcard_t0_kind {
    SIMCARD_T0_OUT,     /* the card sends data (case 2, GET RESPONSE) */
    SIMCARD_T0_IN,      /* the card takes P3 data bytes (case 3 / 4) */
    SIMCARD_T0_NODATA,  /* P3 = 0 and no data either way (case 1) */
    SIMCARD_T0_REFUSE,  /* P3 > 0 but the card does not know INS: 6D 00 at once */
};

/* Provided by simio.c: a log line (no newline), shown with -v. */
void simcard_log(const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

void simcard_init(struct simcard *sc);
/* Reset or power-off: T=0 and T=1 protocol state cleared (IFSD back to 32). */
void simcard_reset(struct simcard *sc);

/* The application on one short command (header c[0..3]); the data it has for the
 * command goes to data[0..*dlen) before any Le trimming.  Returns SW1 SW2. */
uint16_t simcard_app(struct simcard *sc, const uint8_t *c, size_t lc, const uint8_t *cdata,
                     int has_le, size_t le, uint8_t *data, size_t *dlen);

/* A whole APDU (as T=1 carries it) -> response data + SW in r; returns its length. */
size_t simcard_apdu(struct simcard *sc, const uint8_t *c, size_t n, uint8_t *r);

/* T=0 */
int simcard_t0_outgoing(uint8_t ins);
enum simcard_t0_kind simcard_t0_kind(const uint8_t hdr[5]);
/* A command TPDU (header + the data the card took) -> data + SW in r; returns its
 * length.  *wait is set for WAIT, whose answer the reader should delay. */
size_t simcard_t0_tpdu(struct simcard *sc, const uint8_t *c, size_t n, uint8_t *r, int *wait);

/* T=1 */
/* t1_ifsc and t1_crc from the ATR's first TA and TC for T=1 (untouched when absent) */
void simcard_t1_from_atr(struct simcard *sc, const uint8_t *atr, size_t n);
size_t simcard_t1_edc_len(const struct simcard *sc);
/* A block from the host -> the card's block in out (at most SIMCARD_T1_BLOCK_CAP). */
size_t simcard_t1_block(struct simcard *sc, const uint8_t *b, size_t n, uint8_t *out);

#endif
