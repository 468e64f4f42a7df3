/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * simcard: the simulated smart card of the serial test peers (gemtwin-sim,
 * phoenix-sim): the application, its T=0 TPDU engine and its T=1 block engine.
 * See simcard.h for what the card answers.
 */
#include <string.h>

#include "simcard.h"
#include "t1crc.h"

void simcard_init(struct simcard *sc)
{
    memset(sc, 0, sizeof *sc);
    sc->t1_max_inf = 254;
    sc->rng = 0x12345678u;
    simcard_reset(sc);
}

void simcard_reset(struct simcard *sc)
{
    memset(&sc->t1, 0, sizeof sc->t1);
    sc->t1.ifsd = 32;           /* ISO 7816-3 default until S(IFS request) */
    sc->t0_pending_len = 0;
    sc->hang = 0;
}

static uint8_t next_random(struct simcard *sc)
{
    sc->rng = sc->rng * 1103515245u + 12345u;
    return (uint8_t)(sc->rng >> 16);
}

uint16_t simcard_app(struct simcard *sc, const uint8_t *c, size_t lc, const uint8_t *cdata,
                     int has_le, size_t le, uint8_t *data, size_t *dlen)
{
    size_t i;
    *dlen = 0;
    switch (c[1]) {
    case 0xA4: /* SELECT: FCI with the name given */
        if (lc > 250)
            return 0x6700;
        data[0] = 0x6F;
        data[1] = (uint8_t)(2 + lc);
        data[2] = 0x84;
        data[3] = (uint8_t)lc;
        if (lc)
            memcpy(data + 4, cdata, lc);
        *dlen = 4 + lc;
        return 0x9000;
    case 0xB0: { /* READ BINARY */
        unsigned off = ((unsigned)(c[2] & 0x7F) << 8) | c[3];
        if (!has_le || lc)
            return 0x6700;
        for (i = 0; i < le; i++)
            data[i] = (uint8_t)((off + i) & 0xFF);
        *dlen = le;
        return 0x9000;
    }
    case 0x84: /* GET CHALLENGE */
        if (!has_le || lc)
            return 0x6700;
        for (i = 0; i < le; i++)
            data[i] = next_random(sc);
        *dlen = le;
        return 0x9000;
    case 0xEE: /* ECHO */
        if (lc)
            memcpy(data, cdata, lc);
        *dlen = lc;
        return 0x9000;
    case 0xE5: /* WAIT: the protocol layer adds the time extension */
        return 0x9000;
    case 0xE6: /* HANG: the card stops answering (the simulators check sc->hang) */
        sc->hang = 1;
        return 0x9000;
    default:
        return 0x6D00;
    }
}

size_t simcard_apdu(struct simcard *sc, const uint8_t *c, size_t n, uint8_t *r)
{
    size_t lc = 0, le = 0, dlen = 0;
    int has_le = 0;
    const uint8_t *cdata = NULL;
    uint16_t sw;
    if (n < 4)
        sw = 0x6700;
    else {
        if (n == 4) {
            /* case 1 */
        } else if (n == 5) {
            has_le = 1;
            le = c[4] ? c[4] : 256;
        } else if (c[4] != 0 && n == 5u + c[4]) {
            lc = c[4];
            cdata = c + 5;
        } else if (c[4] != 0 && n == 6u + c[4]) {
            lc = c[4];
            cdata = c + 5;
            has_le = 1;
            le = c[5 + lc] ? c[5 + lc] : 256;
        } else {
            r[0] = 0x67;
            r[1] = 0x00;
            return 2;
        }
        sw = simcard_app(sc, c, lc, cdata, has_le, le, r, &dlen);
        if (!has_le)
            dlen = 0;           /* case 1/3: no response data */
        else if (dlen > le)
            dlen = le;
    }
    r[dlen] = (uint8_t)(sw >> 8);
    r[dlen + 1] = (uint8_t)sw;
    return dlen + 2;
}

/* ------------------------------------------------------------------- T=0 */

int simcard_t0_outgoing(uint8_t ins)
{
    return ins == 0xB0 || ins == 0x84 || ins == 0xC0 || ins == 0xCA || ins == 0xB2;
}

/* INS for which the application takes command data */
static int takes_data(uint8_t ins)
{
    return ins == 0xA4 || ins == 0xEE;
}

enum simcard_t0_kind simcard_t0_kind(const uint8_t hdr[5])
{
    if (simcard_t0_outgoing(hdr[1]))
        return SIMCARD_T0_OUT;
    if (hdr[4] == 0)
        return SIMCARD_T0_NODATA;
    return takes_data(hdr[1]) ? SIMCARD_T0_IN : SIMCARD_T0_REFUSE;
}

size_t simcard_t0_tpdu(struct simcard *sc, const uint8_t *c, size_t n, uint8_t *r, int *wait)
{
    size_t dlen = 0, p3, datalen;
    uint16_t sw;
    uint8_t data[258];

    *wait = 0;
    if (n < 5) {
        if (n == 4) {           /* tolerate a case 1 without P3 */
            sc->t0_pending_len = 0;
            sw = simcard_app(sc, c, 0, NULL, 0, 0, data, &dlen);
            *wait = c[1] == 0xE5;
            goto sw_only;
        }
        sw = 0x6700;
        goto sw_only;
    }
    p3 = c[4];
    datalen = n - 5;
    if (c[1] == 0xC0 && datalen == 0) { /* GET RESPONSE */
        size_t le = p3 ? p3 : 256;
        if (!sc->t0_pending_len) {
            sw = 0x6985;
            goto sw_only;
        }
        if (le > sc->t0_pending_len) {
            r[0] = 0x6C;
            r[1] = (uint8_t)sc->t0_pending_len;
            return 2;
        }
        memcpy(r, sc->t0_pending, le);
        if (le < sc->t0_pending_len) {
            memmove(sc->t0_pending, sc->t0_pending + le, sc->t0_pending_len - le);
            sc->t0_pending_len -= le;
            r[le] = 0x61;
            r[le + 1] = (uint8_t)sc->t0_pending_len;
        } else {
            sc->t0_pending_len = 0;
            r[le] = 0x90;
            r[le + 1] = 0x00;
        }
        return le + 2;
    }
    sc->t0_pending_len = 0;
    *wait = c[1] == 0xE5;
    if (datalen == 0) {
        if (simcard_t0_outgoing(c[1])) {        /* case 2 */
            size_t le = p3 ? p3 : 256;
            sw = simcard_app(sc, c, 0, NULL, 1, le, data, &dlen);
            if (sw == 0x9000 && dlen != le) {
                r[0] = 0x6C;
                r[1] = (uint8_t)dlen;
                return 2;
            }
            memcpy(r, data, dlen);
            r[dlen] = (uint8_t)(sw >> 8);
            r[dlen + 1] = (uint8_t)sw;
            return dlen + 2;
        }
        if (p3 == 0) {                          /* case 1 */
            sw = simcard_app(sc, c, 0, NULL, 0, 0, data, &dlen);
            goto sw_only;
        }
        /* P3 announces data that did not come: the card would wait forever */
        sw = takes_data(c[1]) ? 0x6700 : 0x6D00;
        goto sw_only;
    }
    if (p3 > 0 && (datalen == p3 || datalen == p3 + 1)) { /* case 3 (or 4 with Le) */
        sw = simcard_app(sc, c, p3, c + 5, 0, 0, data, &dlen);
        if (sw == 0x9000 && dlen > 0) {
            memcpy(sc->t0_pending, data, dlen);
            sc->t0_pending_len = dlen;
            r[0] = 0x61;
            r[1] = (uint8_t)dlen;
            return 2;
        }
        goto sw_only;
    }
    sw = 0x6700;
sw_only:
    r[0] = (uint8_t)(sw >> 8);
    r[1] = (uint8_t)sw;
    return 2;
}

/* ------------------------------------------------------------------- T=1 */

void simcard_t1_from_atr(struct simcard *sc, const uint8_t *atr, size_t n)
{
    /* the first TA (IFSC) and TC (bit 0: CRC) after a TDi (i >= 2) naming T=1 */
    size_t i = 2;
    unsigned y, level = 1, t = 0;
    int ta = 0, tc = 0;
    if (n < 2)
        return;
    y = atr[1] >> 4;
    for (;;) {
        int k, byte[4] = { -1, -1, -1, -1 };
        for (k = 0; k < 4; k++)
            if (y & (1u << k)) {
                if (i >= n)
                    return;
                byte[k] = atr[i++];
            }
        if (level >= 3 && t == 1) {
            if (byte[0] >= 0 && !ta++)
                sc->t1_ifsc = byte[0];
            if (byte[2] >= 0 && !tc++)
                sc->t1_crc = byte[2] & 1;
        }
        if (byte[3] < 0)
            return;
        t = (unsigned)byte[3] & 15;
        y = (unsigned)byte[3] >> 4;
        level++;
    }
}

size_t simcard_t1_edc_len(const struct simcard *sc)
{
    return sc->t1_crc ? 2 : 1;
}

/* EDC of b[0..n) written at b[n]; returns its length */
static size_t put_edc(const struct simcard *sc, uint8_t *b, size_t n)
{
    size_t i;
    uint8_t lrc = 0;
    if (sc->t1_crc) {
        uint16_t v = t1crc(b, n);
        b[n] = (uint8_t)(v >> 8);
        b[n + 1] = (uint8_t)v;
        return 2;
    }
    for (i = 0; i < n; i++)
        lrc ^= b[i];
    b[n] = lrc;
    return 1;
}

/* Build a block and remember it for retransmission */
static size_t t1_make(struct simcard *sc, uint8_t *out, uint8_t nad, uint8_t pcb,
                      const uint8_t *inf, size_t len)
{
    size_t n;
    out[0] = nad;
    out[1] = pcb;
    out[2] = (uint8_t)len;
    if (len)
        memcpy(out + 3, inf, len);
    n = 3 + len;
    n += put_edc(sc, out, n);
    memcpy(sc->t1.last, out, n);
    sc->t1.last_len = n;
    return n;
}

static size_t t1_rblock(struct simcard *sc, uint8_t *out, uint8_t nad, int err)
{
    return t1_make(sc, out, nad, (uint8_t)(0x80 | (sc->t1.nr << 4) | err), NULL, 0);
}

static size_t t1_resend(struct simcard *sc, uint8_t *out, uint8_t nad)
{
    if (!sc->t1.last_len)
        return t1_rblock(sc, out, nad, 0);
    memcpy(out, sc->t1.last, sc->t1.last_len);
    return sc->t1.last_len;
}

static size_t t1_next_chunk(struct simcard *sc, uint8_t *out, uint8_t nad)
{
    size_t left = sc->t1.tx_len - sc->t1.tx_off;
    size_t chunk = left;
    int more;
    uint8_t pcb;
    size_t n;
    if (chunk > (size_t)sc->t1.ifsd)
        chunk = (size_t)sc->t1.ifsd;
    if (chunk > (size_t)sc->t1_max_inf)
        chunk = (size_t)sc->t1_max_inf;
    more = chunk < left;
    pcb = (uint8_t)((sc->t1.ns << 6) | (more ? 0x20 : 0));
    sc->t1.ns ^= 1;
    n = t1_make(sc, out, nad, pcb, sc->t1.tx + sc->t1.tx_off, chunk);
    sc->t1.tx_off += chunk;
    sc->t1.tx_active = more;
    return n;
}

size_t simcard_t1_block(struct simcard *sc, const uint8_t *b, size_t n, uint8_t *out)
{
    size_t edc = simcard_t1_edc_len(sc);
    uint8_t nad, pcb, want[SIMCARD_T1_BLOCK_CAP];
    if (n < 3 + edc || b[2] == 0xFF || (size_t)b[2] + 3 + edc != n) {
        simcard_log("T=1 card: malformed block");
        return t1_rblock(sc, out, 0, 2);
    }
    /* the card answers with source and destination swapped */
    nad = (uint8_t)(((b[0] & 0x07) << 4) | ((b[0] >> 4) & 0x07));
    memcpy(want, b, n - edc);
    put_edc(sc, want, n - edc);
    if (memcmp(want + n - edc, b + n - edc, edc)) {
        simcard_log("T=1 card: EDC error");
        return t1_rblock(sc, out, nad, 1);
    }
    pcb = b[1];
    if (!(pcb & 0x80)) {                                 /* I-block */
        int ns = (pcb >> 6) & 1, more = (pcb >> 5) & 1;
        if (sc->t1_ifsc > 0 && b[2] > sc->t1_ifsc) {
            simcard_log("T=1 card: I-block of %u bytes exceeds IFSC %d", b[2], sc->t1_ifsc);
            return t1_rblock(sc, out, nad, 2);
        }
        if (ns != sc->t1.nr) {
            simcard_log("T=1 card: I-block N(S)=%d repeated, resending the last block", ns);
            if (sc->t1.last_len)
                return t1_resend(sc, out, nad);
            return t1_rblock(sc, out, nad, 2);
        }
        sc->t1.nr ^= 1;
        sc->t1.tx_active = 0;
        sc->t1.wtx_pending = 0;
        if (sc->t1.rx_len + b[2] > sizeof sc->t1.rx)
            sc->t1.rx_overflow = 1;
        else {
            memcpy(sc->t1.rx + sc->t1.rx_len, b + 3, b[2]);
            sc->t1.rx_len += b[2];
        }
        if (more) {
            simcard_log("T=1 card: chained I-block, %zu bytes so far", sc->t1.rx_len);
            return t1_rblock(sc, out, nad, 0);
        }
        if (sc->t1.rx_overflow) {
            sc->t1.tx[0] = 0x67;
            sc->t1.tx[1] = 0x00;
            sc->t1.tx_len = 2;
        } else {
            sc->t1.tx_len = simcard_apdu(sc, sc->t1.rx, sc->t1.rx_len, sc->t1.tx);
        }
        simcard_log("T=1 card: APDU of %zu bytes -> response of %zu bytes", sc->t1.rx_len,
                    sc->t1.tx_len);
        sc->t1.rx_len = 0;
        sc->t1.rx_overflow = 0;
        sc->t1.tx_off = 0;
        if (sc->t1.rx[1] == 0xE5 && sc->t1.tx_len == 2) {
            uint8_t mult = 1;
            sc->t1.wtx_pending = 1;
            simcard_log("T=1 card: S(WTX request)");
            return t1_make(sc, out, nad, 0xC3, &mult, 1);
        }
        return t1_next_chunk(sc, out, nad);
    }
    if ((pcb & 0xC0) == 0x80) {                          /* R-block */
        int nr = (pcb >> 4) & 1;
        if (sc->t1.tx_active && nr == sc->t1.ns) {
            simcard_log("T=1 card: R-block acknowledges, next chained block");
            return t1_next_chunk(sc, out, nad);
        }
        simcard_log("T=1 card: R-block N(R)=%d, resending the last block", nr);
        return t1_resend(sc, out, nad);
    }
    switch (pcb) {                                       /* S-block */
    case 0xC0:
        simcard_log("T=1 card: S(RESYNCH request)");
        simcard_reset(sc);
        return t1_make(sc, out, nad, 0xE0, NULL, 0);
    case 0xC1:
        if (b[2] != 1 || b[3] == 0 || b[3] == 0xFF)
            return t1_rblock(sc, out, nad, 2);
        sc->t1.ifsd = b[3];
        simcard_log("T=1 card: S(IFS request) IFSD=%d", sc->t1.ifsd);
        return t1_make(sc, out, nad, 0xE1, b + 3, 1);
    case 0xC2:
        simcard_log("T=1 card: S(ABORT request)");
        sc->t1.rx_len = 0;
        sc->t1.tx_active = 0;
        return t1_make(sc, out, nad, 0xE2, NULL, 0);
    case 0xE3:
        if (sc->t1.wtx_pending && sc->t1_wtx_storm) {
            uint8_t mult = 1;
            simcard_log("T=1 card: S(WTX response), and another S(WTX request) (storm)");
            return t1_make(sc, out, nad, 0xC3, &mult, 1);
        }
        if (sc->t1.wtx_pending) {
            sc->t1.wtx_pending = 0;
            simcard_log("T=1 card: S(WTX response), sending the answer");
            return t1_next_chunk(sc, out, nad);
        }
        return t1_rblock(sc, out, nad, 2);
    default:
        simcard_log("T=1 card: unexpected S-block %02X", pcb);
        return t1_rblock(sc, out, nad, 2);
    }
}
