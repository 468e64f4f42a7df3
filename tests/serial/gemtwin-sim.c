/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * gemtwin-sim: a Gemalto GemPC Twin *serial* smart card reader, simulated on a
 * pseudo-terminal, with a simulated T=0 or T=1 card in its slot.  Test peer for
 * Calais' serial CCID backend; validated against pcscd + libccid's serial driver
 * (libccidtwin) by tests/serial/pcscd-serial-check.
 *
 * Wire protocol (both directions): SYNC 0x03, CTRL 0x06 (ACK), a CCID message
 * (10-byte header + data, CCID 1.1 chapter 6), LRC = XOR of all preceding bytes.
 *   - every accepted host frame is echoed byte for byte first, then answered;
 *   - a frame that is rejected (bad LRC, bad CTRL, too long, garbage, truncated)
 *     gets NAK "03 15 16" (no echo, no answer); the host resends;
 *   - card movement "50 02" (removed) / "50 03" (inserted) once enabled by Escape
 *     01 01 01: sent after the echo of the next host frame, before its answer
 *     (--async-notify: enabled from the start and sent at once);
 *   - reader: one slot, TPDU exchange level, dwMaxCCIDMessageLength 271, T=0/T=1.
 *
 * Usage: gemtwin-sim [options]
 *   --card t0|t1|none   card in the slot (default t1; none = empty slot, a card
 *                       inserted later with SIGUSR2 is a T=1 card)
 *   --absent            start with the slot empty (card type still from --card)
 *   --atr HEX           override the card's ATR (e.g. 3B8081312045 55)
 *   --link PATH         create a symlink PATH -> slave pty (removed at exit)
 *   --firmware STR      Escape 02 answer (default "GemTwin V2.31-Calais-sim")
 *   --async-notify      card movements notified at once, no Escape 01 01 01 needed
 *   --nak-first         NAK the first well-formed host frame (same as --nak 1)
 *   --nak N             NAK the Nth well-formed host frame
 *   --no-echo           never echo host frames
 *   --bad-lrc N         corrupt the LRC of the Nth answer frame
 *   --garbage N         send "GARBAGE" (7 bytes) before the Nth answer frame
 *   --time-ext N        send a CCID time-extension frame before the Nth answer
 *   --silent-after N    after N answered commands, ignore the line entirely
 *   --delay MS          wait MS milliseconds before every answer
 *   --frame-timeout MS  a frame left incomplete for MS ms is NAKed (default 500)
 *   --t1-max-inf N      the T=1 card sends at most N INF bytes per block (default
 *                       254; the host's IFSD also limits it)
 *   --wtx-storm         the T=1 card answers WAIT with S(WTX) requests, forever
 *   --mute-power-on     IccPowerOn is echoed and never answered (a mute card the
 *                       reader keeps waiting on); other commands are answered
 *   -v                  log every frame (and what it means) to stderr
 * Numbering: "answer" = a CCID response frame (echoes, NAKs, notifications and
 * time-extension frames are not counted), "host frame" = a well-formed frame from
 * the host; both count from 1.
 *
 * Stdout: one line "PTY /dev/pts/N", flushed once the pty is ready.
 * Signals: SIGUSR1 card removed, SIGUSR2 card inserted, SIGTERM/SIGINT/SIGHUP exit 0.
 *
 * The cards (same small application for both; the card model, shared with
 * phoenix-sim, is simcard.c, as is the plumbing, simio.c):
 *   SELECT      00 A4 p1 p2 Lc data [Le]  -> FCI 6F L 84 Lc data, 90 00
 *                                            (T=0: 61 xx, then GET RESPONSE 00 C0 00 00 xx)
 *   READ BINARY 00 B0 hi lo Le            -> Le bytes, byte i = (offset + i) & 0xFF, 90 00
 *   GET CHALLENGE 00 84 00 00 Le          -> Le pseudo-random bytes, 90 00
 *   ECHO        80 EE 00 00 Lc data [Le]  -> data (case 4) / nothing (case 3), 90 00
 *   WAIT        80 E5 00 00               -> 90 00 after a T=1 S(WTX) request / a T=0
 *                                            time-request byte 0x80 from the reader
 *   HANG        80 E6 00 00               -> no answer: the XfrBlock stays unanswered,
 *                                            and so does every one until the next reset
 *   anything else                         -> 6D 00
 * T=1 card: IFSC and EDC (LRC, or CRC when TC3 bit 0 is set) from its ATR (default:
 * IFSC 32, LRC), answers I-blocks (chaining both ways), R-blocks
 * (retransmission / next chained block), S(IFS), S(RESYNCH), S(ABORT), S(WTX).
 * A PPS (XfrBlock starting with FF right after power-on) is confirmed by echo.
 */
#if !defined(_GNU_SOURCE) && !defined(_XOPEN_SOURCE)
#define _XOPEN_SOURCE 700
#endif
#include <limits.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "simcard.h"
#include "simio.h"

#define SYNC 0x03
#define CTRL_ACK 0x06
#define CTRL_NAK 0x15
#define MAX_MSG 271                 /* dwMaxCCIDMessageLength of the GemPC Twin */
#define RX_CAP 8192

/* CCID message types */
#define PC_SetParameters 0x61
#define PC_IccPowerOn 0x62
#define PC_IccPowerOff 0x63
#define PC_GetSlotStatus 0x65
#define PC_Secure 0x69
#define PC_T0APDU 0x6A
#define PC_Escape 0x6B
#define PC_GetParameters 0x6C
#define PC_ResetParameters 0x6D
#define PC_IccClock 0x6E
#define PC_XfrBlock 0x6F
#define PC_Mechanical 0x71
#define PC_Abort 0x72
#define PC_SetDataRate 0x73
#define RDR_DataBlock 0x80
#define RDR_SlotStatus 0x81
#define RDR_Parameters 0x82
#define RDR_Escape 0x83
#define RDR_DataRate 0x84

#define ICC_ACTIVE 0
#define ICC_INACTIVE 1
#define ICC_ABSENT 2
#define CMD_FAILED 0x40
#define CMD_TIME_EXT 0x80

/* --card, --absent, --atr, --link, --t1-max-inf (simio.c) */
static struct sim_opts common;

static struct {
    const char *firmware;
    int async_notify;
    long nak_nth, bad_lrc_nth, garbage_nth, time_ext_nth, silent_after;
    int no_echo, mute_power_on;
    long delay_ms, frame_timeout_ms;
} opt = {
    .firmware = "GemTwin V2.31-Calais-sim",
    .frame_timeout_ms = 500,
};

static const uint8_t ATR_T0[] = { 0x3B, 0x02, 0x14, 0x50 };
/* T=1 only: TD1 -> TD2 (T=1) -> TA3 = IFSC 32, TB3 = BWI 4 / CWI 5; TCK */
static const uint8_t ATR_T1[] = { 0x3B, 0x80, 0x81, 0x31, 0x20, 0x45, 0x55 };

static struct sim_pty pty;

/* reader state */
static int notify_on;               /* 1 after Escape 01 01 01 (or --async-notify) */
static uint8_t notify_q[16];
static int notify_n;
static long host_frames, commands, answers;
static int silent;
static int pre_time_request;        /* T=0 card: send 0x80 before the next answer */
static uint8_t params[7] = { 0x11, 0x00, 0x00, 0x0A, 0x00 };
static size_t params_len = 5;
static int params_proto;

/* card state */
static int present, powered, pps_allowed;
static struct simcard card;

/* ------------------------------------------------------------------------ */

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* ---------------------------------------------------------------- line I/O */

static void send_frame(const uint8_t *msg, size_t len, int corrupt, const char *what)
{
    uint8_t f[3 + RX_CAP];
    uint8_t lrc = SYNC ^ CTRL_ACK;
    size_t i;
    f[0] = SYNC;
    f[1] = CTRL_ACK;
    memcpy(f + 2, msg, len);
    for (i = 0; i < len; i++)
        lrc ^= msg[i];
    f[2 + len] = corrupt ? (uint8_t)(lrc ^ 0x5A) : lrc;
    sim_loghex(what, f, len + 3);
    sim_put(&pty, f, len + 3);
}

static void send_nak(const char *why)
{
    static const uint8_t nak[3] = { SYNC, CTRL_NAK, SYNC ^ CTRL_NAK };
    sim_logf("reject: %s", why);
    sim_loghex("sim<  NAK", nak, 3);
    sim_put(&pty, nak, 3);
}

static void flush_notifications(void)
{
    int i;
    for (i = 0; i < notify_n; i++) {
        uint8_t n[2] = { 0x50, notify_q[i] };
        sim_loghex(notify_q[i] == 0x02 ? "sim<  notify card removed" : "sim<  notify card inserted", n, 2);
        sim_put(&pty, n, 2);
    }
    notify_n = 0;
}

/* A CCID answer, with the fault injections that apply to it. */
static void send_answer(uint8_t *msg, size_t len)
{
    static const uint8_t garbage[] = "GARBAGE";
    answers++;
    if (opt.delay_ms > 0)
        sim_sleep_ms(opt.delay_ms);
    if (pre_time_request) {
        uint8_t b = 0x80;
        pre_time_request = 0;
        sim_loghex("sim<  T=0 time request", &b, 1);
        sim_put(&pty, &b, 1);
    }
    if (opt.time_ext_nth == answers) {
        uint8_t te[10];
        memcpy(te, msg, 10);
        te[1] = te[2] = te[3] = te[4] = 0;
        te[7] = (uint8_t)(CMD_TIME_EXT | (msg[7] & 3));
        te[8] = 1;
        te[9] = 0;
        send_frame(te, 10, 0, "sim<  time extension (fault)");
    }
    if (opt.garbage_nth == answers) {
        sim_loghex("sim<  garbage (fault)", garbage, sizeof garbage - 1);
        sim_put(&pty, garbage, sizeof garbage - 1);
    }
    send_frame(msg, len, opt.bad_lrc_nth == answers,
               opt.bad_lrc_nth == answers ? "sim<  answer (bad LRC: fault)" : "sim<  answer");
}

/* ------------------------------------------------------------------- card */

static int icc_status(void)
{
    if (!present)
        return ICC_ABSENT;
    return powered ? ICC_ACTIVE : ICC_INACTIVE;
}

static void card_reset_state(void)
{
    simcard_reset(&card);
    pps_allowed = 0;
}

/* --------------------------------------------------------- CCID commands */

static size_t hdr(uint8_t *a, uint8_t type, const uint8_t *cmd, size_t dlen, uint8_t status,
                  uint8_t error, uint8_t b9)
{
    a[0] = type;
    a[1] = (uint8_t)dlen;
    a[2] = (uint8_t)(dlen >> 8);
    a[3] = (uint8_t)(dlen >> 16);
    a[4] = (uint8_t)(dlen >> 24);
    a[5] = cmd[5];
    a[6] = cmd[6];
    a[7] = status;
    a[8] = error;
    a[9] = b9;
    return 10 + dlen;
}

static const char *cmd_name(uint8_t t)
{
    switch (t) {
    case PC_SetParameters: return "SetParameters";
    case PC_IccPowerOn: return "IccPowerOn";
    case PC_IccPowerOff: return "IccPowerOff";
    case PC_GetSlotStatus: return "GetSlotStatus";
    case PC_Secure: return "Secure";
    case PC_T0APDU: return "T0APDU";
    case PC_Escape: return "Escape";
    case PC_GetParameters: return "GetParameters";
    case PC_ResetParameters: return "ResetParameters";
    case PC_IccClock: return "IccClock";
    case PC_XfrBlock: return "XfrBlock";
    case PC_Mechanical: return "Mechanical";
    case PC_Abort: return "Abort";
    case PC_SetDataRate: return "SetDataRateAndClockFrequency";
    default: return "unknown";
    }
}

static void default_params(void)
{
    if (common.card == SIM_CARD_T1) {
        /* Fi/Di 1/1, LRC, no extra guard time, BWI/CWI from TB3, IFSC 32 */
        static const uint8_t p1[7] = { 0x11, 0x10, 0x00, 0x45, 0x00, 0x20, 0x00 };
        memcpy(params, p1, 7);
        params_len = 7;
        params_proto = 1;
    } else {
        static const uint8_t p0[5] = { 0x11, 0x00, 0x00, 0x0A, 0x00 };
        memcpy(params, p0, 5);
        params_len = 5;
        params_proto = 0;
    }
}

static void handle_command(const uint8_t *c, size_t n)
{
    uint8_t a[10 + RX_CAP];
    size_t len = 0, dlen = n - 10;
    const uint8_t *d = c + 10;
    int st = icc_status();

    sim_logf("cmd %s (0x%02X) slot %u seq %u, %zu data bytes", cmd_name(c[0]), c[0], c[5], c[6], dlen);

    if (c[5] != 0 && c[0] != PC_Escape) {
        uint8_t type = c[0] == PC_XfrBlock || c[0] == PC_IccPowerOn || c[0] == PC_Secure ? RDR_DataBlock
                     : c[0] == PC_SetParameters || c[0] == PC_GetParameters || c[0] == PC_ResetParameters ? RDR_Parameters
                     : RDR_SlotStatus;
        len = hdr(a, type, c, 0, CMD_FAILED | ICC_ABSENT, 5, 0);
        send_answer(a, len);
        return;
    }

    switch (c[0]) {
    case PC_IccPowerOn:
        if (opt.mute_power_on && present) {
            sim_logf("IccPowerOn left unanswered (--mute-power-on)");
            return;
        }
        if (!present) {
            len = hdr(a, RDR_DataBlock, c, 0, CMD_FAILED | ICC_ABSENT, 0xFE, 0);
            break;
        }
        powered = 1;
        card_reset_state();
        pps_allowed = 1;
        default_params();
        memcpy(a + 10, common.atr, common.atr_len);
        len = hdr(a, RDR_DataBlock, c, common.atr_len, ICC_ACTIVE, 0, 0);
        sim_logf("card powered on (bPowerSelect %u)", c[7]);
        break;
    case PC_IccPowerOff:
        powered = 0;
        card_reset_state();
        len = hdr(a, RDR_SlotStatus, c, 0, (uint8_t)icc_status(), 0, present ? 1 : 0);
        break;
    case PC_GetSlotStatus:
        len = hdr(a, RDR_SlotStatus, c, 0, (uint8_t)st, 0, st == ICC_ACTIVE ? 0 : 1);
        break;
    case PC_SetParameters:
        if (!present) {
            len = hdr(a, RDR_Parameters, c, 0, CMD_FAILED | ICC_ABSENT, 0xFE, c[7]);
            break;
        }
        if ((c[7] == 0 && dlen == 5) || (c[7] == 1 && dlen == 7)) {
            memcpy(params, d, dlen);
            params_len = dlen;
            params_proto = c[7];
            memcpy(a + 10, d, dlen);
            len = hdr(a, RDR_Parameters, c, dlen, (uint8_t)st, 0, c[7]);
        } else {
            len = hdr(a, RDR_Parameters, c, 0, (uint8_t)(CMD_FAILED | st), c[7] > 1 ? 7 : 1, c[7]);
        }
        break;
    case PC_GetParameters:
    case PC_ResetParameters:
        if (!present) {
            len = hdr(a, RDR_Parameters, c, 0, CMD_FAILED | ICC_ABSENT, 0xFE, 0);
            break;
        }
        if (c[0] == PC_ResetParameters)
            default_params();
        memcpy(a + 10, params, params_len);
        len = hdr(a, RDR_Parameters, c, params_len, (uint8_t)st, 0, (uint8_t)params_proto);
        break;
    case PC_Escape:
        if (dlen == 1 && d[0] == 0x02) {
            size_t fl = strlen(opt.firmware);
            memcpy(a + 10, opt.firmware, fl);
            len = hdr(a, RDR_Escape, c, fl, (uint8_t)st, 0, 0);
        } else if (dlen == 3 && d[0] == 0x01 && d[1] == 0x01) {
            notify_on = d[2] != 0 || opt.async_notify;
            sim_logf("card movement notifications %s", notify_on ? "on" : "off");
            len = hdr(a, RDR_Escape, c, 0, (uint8_t)st, 0, 0);
        } else {
            /* e.g. 6A (Gemalto firmware features): a GemPC Twin does not know it */
            len = hdr(a, RDR_Escape, c, 0, (uint8_t)(CMD_FAILED | st), 0x00, 0);
        }
        break;
    case PC_XfrBlock: {
        uint8_t r[RX_CAP];
        size_t rl;
        if (!present) {
            len = hdr(a, RDR_DataBlock, c, 0, CMD_FAILED | ICC_ABSENT, 0xFE, 0);
            break;
        }
        if (!powered) {
            len = hdr(a, RDR_DataBlock, c, 0, CMD_FAILED | ICC_INACTIVE, 0xFE, 0);
            break;
        }
        if (dlen == 0) {
            len = hdr(a, RDR_DataBlock, c, 0, CMD_FAILED | ICC_ACTIVE, 1, 0);
            break;
        }
        if (pps_allowed && d[0] == 0xFF) {
            uint8_t x = 0;
            size_t i;
            for (i = 0; i < dlen; i++)
                x ^= d[i];
            pps_allowed = 0;
            if (dlen < 3 || dlen > 6 || x) {
                sim_logf("card: bad PPS request, card mute");
                len = hdr(a, RDR_DataBlock, c, 0, CMD_FAILED | ICC_ACTIVE, 0xFE, 0);
                break;
            }
            sim_logf("card: PPS accepted (PPS0 %02X)", d[1]);
            memcpy(a + 10, d, dlen);
            len = hdr(a, RDR_DataBlock, c, dlen, ICC_ACTIVE, 0, 0);
            break;
        }
        pps_allowed = 0;
        if (card.hang) {
            sim_logf("card: mute since HANG, XfrBlock left unanswered");
            return;
        }
        if (common.card == SIM_CARD_T1) {
            rl = simcard_t1_block(&card, d, dlen, r);
        } else {
            int wait;
            rl = simcard_t0_tpdu(&card, d, dlen, r, &wait);
            if (wait)
                pre_time_request = 1;
        }
        if (card.hang) {
            sim_logf("card: HANG, XfrBlock left unanswered");
            return;
        }
        memcpy(a + 10, r, rl);
        len = hdr(a, RDR_DataBlock, c, rl, ICC_ACTIVE, 0, 0);
        break;
    }
    case PC_IccClock:
    case PC_T0APDU:
    case PC_Abort:
        len = hdr(a, RDR_SlotStatus, c, 0, (uint8_t)st, 0, 0);
        break;
    case PC_SetDataRate: {
        static const uint8_t rates[8] = { 0xA0, 0x0F, 0x00, 0x00, 0x00, 0x2A, 0x00, 0x00 };
        memcpy(a + 10, rates, 8);  /* 4000 kHz, 10752 bps */
        len = hdr(a, RDR_DataRate, c, 8, (uint8_t)st, 0, 0);
        break;
    }
    case PC_Secure:
        len = hdr(a, RDR_DataBlock, c, 0, (uint8_t)(CMD_FAILED | st), 0x00, 0);
        break;
    default:
        len = hdr(a, RDR_SlotStatus, c, 0, (uint8_t)(CMD_FAILED | st), 0x00, 0);
        break;
    }
    sim_logf("ans type 0x%02X bStatus 0x%02X bError 0x%02X, %zu data bytes", a[0], a[7], a[8], len - 10);
    send_answer(a, len);
}

/* A well-formed host frame (SYNC ACK msg LRC) */
static void handle_frame(const uint8_t *f, size_t n)
{
    host_frames++;
    sim_loghex("host> frame", f, n);
    if (silent) {
        sim_logf("silent: frame ignored");
        return;
    }
    if (opt.nak_nth == host_frames) {
        send_nak("--nak fault injection");
        return;
    }
    if (!opt.no_echo) {
        sim_loghex("sim<  echo", f, n);
        sim_put(&pty, f, n);
    }
    if (notify_on)
        flush_notifications();
    handle_command(f + 2, n - 3);
    commands++;
    if (opt.silent_after > 0 && commands >= opt.silent_after) {
        silent = 1;
        sim_logf("silent from now on (--silent-after %ld)", opt.silent_after);
    }
}

/* -------------------------------------------------------------- receiving */

static uint8_t rx[RX_CAP];
static size_t rx_len;
static int junk;                    /* non-frame bytes seen since the last good frame */

static void rx_drop(size_t k)
{
    memmove(rx, rx + k, rx_len - k);
    rx_len -= k;
}

/* Parse what we have; returns 1 if an incomplete frame is pending. */
static int rx_parse(void)
{
    for (;;) {
        size_t skip = 0, msg, i;
        uint8_t lrc = 0;
        while (skip < rx_len && rx[skip] != SYNC)
            skip++;
        if (skip) {
            sim_loghex("host> junk", rx, skip);
            junk = 1;
            rx_drop(skip);
        }
        if (rx_len == 0)
            return 0;
        if (rx_len < 2)
            return 1;
        if (rx[1] != CTRL_ACK) {
            sim_loghex("host> bad CTRL", rx, 2);
            junk = 1;
            rx_drop(1);
            continue;
        }
        if (rx_len < 7)
            return 1;
        msg = 10 + (size_t)le32(rx + 3);
        if (le32(rx + 3) > MAX_MSG - 10) {
            sim_logf("host> message length %lu exceeds %d", (unsigned long)msg, MAX_MSG);
            junk = 1;
            rx_drop(1);
            continue;
        }
        if (rx_len < msg + 3)
            return 1;
        for (i = 0; i < msg + 3; i++)
            lrc ^= rx[i];
        if (lrc != 0) {
            sim_loghex("host> frame with bad LRC", rx, msg + 3);
            junk = 0;
            if (!silent)
                send_nak("bad LRC");
            rx_drop(msg + 3);
            continue;
        }
        junk = 0;
        {
            uint8_t f[3 + MAX_MSG];
            memcpy(f, rx, msg + 3);
            rx_drop(msg + 3);
            handle_frame(f, msg + 3);
        }
    }
}

/* ---------------------------------------------------------------- events */

static void card_event(int insert)
{
    if (insert) {
        if (present) {
            sim_logf("SIGUSR2: card already present");
            return;
        }
        present = 1;
        powered = 0;
    } else {
        if (!present) {
            sim_logf("SIGUSR1: no card to remove");
            return;
        }
        present = 0;
        powered = 0;
    }
    card_reset_state();
    sim_logf("card %s", insert ? "inserted" : "removed");
    if (notify_on && notify_n < (int)sizeof notify_q) {
        notify_q[notify_n++] = insert ? 0x03 : 0x02;
        if (opt.async_notify && !silent)
            flush_notifications();
    }
}

/* ------------------------------------------------------------------ setup */

static _Noreturn void usage(void)
{
    fprintf(stderr,
            "usage: gemtwin-sim [--card t0|t1|none] [--absent] [--atr HEX] [--link PATH]\n"
            "         [--firmware STR] [--async-notify] [--nak-first] [--nak N] [--no-echo]\n"
            "         [--bad-lrc N] [--garbage N] [--time-ext N] [--silent-after N]\n"
            "         [--delay MS] [--frame-timeout MS] [--t1-max-inf N] [--wtx-storm]\n"
            "         [--mute-power-on] [-v]\n"
            "Prints 'PTY /dev/pts/N'; SIGUSR1 removes the card, SIGUSR2 inserts it.\n");
    exit(2);
}

/* The options of gemtwin-sim alone (simio.c parses the common ones); 0: not one. */
static int option(int argc, char **argv, int *i)
{
    const char *a = argv[*i];
    if (!strcmp(a, "--firmware")) {
        if (++*i >= argc)
            usage();
        opt.firmware = argv[*i];
        if (strlen(opt.firmware) > 40)
            sim_die("--firmware: at most 40 characters (libccid reads up to 49)");
    } else if (!strcmp(a, "--async-notify"))
        opt.async_notify = 1;
    else if (!strcmp(a, "--nak-first"))
        opt.nak_nth = 1;
    else if (!strcmp(a, "--nak"))
        opt.nak_nth = sim_num_arg(argc, argv, i, LONG_MAX);
    else if (!strcmp(a, "--mute-power-on"))
        opt.mute_power_on = 1;
    else if (!strcmp(a, "--no-echo"))
        opt.no_echo = 1;
    else if (!strcmp(a, "--bad-lrc"))
        opt.bad_lrc_nth = sim_num_arg(argc, argv, i, LONG_MAX);
    else if (!strcmp(a, "--garbage"))
        opt.garbage_nth = sim_num_arg(argc, argv, i, LONG_MAX);
    else if (!strcmp(a, "--time-ext"))
        opt.time_ext_nth = sim_num_arg(argc, argv, i, LONG_MAX);
    else if (!strcmp(a, "--silent-after"))
        opt.silent_after = sim_num_arg(argc, argv, i, LONG_MAX);
    else if (!strcmp(a, "--delay"))
        opt.delay_ms = sim_num_arg(argc, argv, i, LONG_MAX);
    else if (!strcmp(a, "--frame-timeout"))
        opt.frame_timeout_ms = sim_num_arg(argc, argv, i, LONG_MAX);
    else
        return 0;
    return 1;
}

int main(int argc, char **argv)
{
    sim_init("gemtwin-sim");
    sim_parse_args(argc, argv, &common, option, usage);
    if (!common.atr_len) {
        const uint8_t *atr = common.card == SIM_CARD_T0 ? ATR_T0 : ATR_T1;
        common.atr_len = common.card == SIM_CARD_T0 ? sizeof ATR_T0 : sizeof ATR_T1;
        memcpy(common.atr, atr, common.atr_len);
    }
    present = !(common.absent || common.card_none);
    notify_on = opt.async_notify;
    simcard_init(&card);
    simcard_t1_from_atr(&card, common.atr, common.atr_len);
    card.t1_max_inf = common.t1_max_inf;
    card.t1_wtx_storm = common.wtx_storm;
    card_reset_state();
    default_params();

    sim_signals_init();
    sim_pty_open(&pty, IGNBRK | IGNPAR, 2);
    sim_set_raw(pty.mfd, IGNBRK | IGNPAR, 2);
    sim_pty_ready(&pty, common.link);
    sim_logf("reader ready on %s: card %s%s, ATR of %zu bytes", pty.slave,
             common.card == SIM_CARD_T0 ? "T=0" : "T=1", present ? "" : " (absent)",
             common.atr_len);

    for (;;) {
        int partial = rx_len > 0;
        int timeout = partial ? (int)opt.frame_timeout_ms : junk ? 50 : -1;
        short ev;
        if (sim_wait(&pty, timeout, card_event, &ev) == 0) {
            if (partial) {
                sim_loghex("host> incomplete frame", rx, rx_len);
                rx_len = 0;
            }
            junk = 0;
            if (!silent)
                send_nak(partial ? "incomplete frame (timeout)" : "garbage");
            continue;
        }
        if (ev & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t k = sim_pty_read(&pty, rx + rx_len, sizeof rx - rx_len);
            if (k <= 0)
                continue;
            rx_len += (size_t)k;
            rx_parse();
            if (rx_len == sizeof rx) {
                sim_logf("receive buffer full, dropped");
                rx_len = 0;
                junk = 1;
            }
        }
    }
}
