/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * phoenix-sim: a Phoenix/Smartmouse direct-UART smart card reader, simulated on a
 * pseudo-terminal, with a simulated ISO 7816-3 card that speaks byte by byte.  Test
 * peer for Calais' Phoenix serial backend.
 *
 * In a Phoenix reader the UART *is* the card's I/O line: no framing protocol, the
 * card's RX and TX are tied together (every byte the host sends comes back), RTS
 * drives the card's RST line and a modem line reports card presence.  A pty has no
 * modem lines, so:
 *   - RESET: a flush by the host (tcflush() on the slave, TCSAFLUSH: any packet-mode
 *     status with TIOCPKT_FLUSHREAD or TIOCPKT_FLUSHWRITE) stands for the RTS pulse.
 *     The card, if present, drops all protocol state and sends its ATR 5 ms later;
 *   - card detect: --state-file PATH holds "1\n" (present) or "0\n", rewritten
 *     atomically (PATH.tmp + rename) at start and at every insertion/removal.
 * Line settings: the simulator reads the slave's termios through the master.  The
 * card runs at f = --clock-khz (default 3571, taken as 3571.2 kHz: 372 clocks/etu is
 * exactly 9600 bps) and a rate of f * D / F, F=372 D=1 after reset, then PPS1's.  The
 * host's speed must be within 2 % of it, PARODD must be clear (direct convention) or
 * set (inverse; Linux ptys clear PARENB, so even parity and no parity look the same),
 * and CSTOPB set (2 stop bits; T=1 with TC1=255 may use 1).  The ATR only checks the
 * speed (the host learns the convention from TS).  On a mismatch the card sees
 * garbage: host bytes are ignored (still echoed) and its own bytes go out as 0xFF.
 *
 * Usage: phoenix-sim [options]
 *   --card t0|t1|none   card in the slot (default t1; none = empty slot, a card
 *                       inserted later with SIGUSR2 is a T=1 card)
 *   --absent            start with the slot empty (card type still from --card)
 *   --convention direct|inverse
 *                       how the card codes its bytes (default direct; with --atr,
 *                       from its TS): inverse puts bitreverse8(~b) on the wire, so
 *                       TS 3F reads 03 on a direct-convention UART; host bytes are
 *                       decoded the same way
 *   --atr HEX           override the ATR (logical bytes, TS included)
 *   --clock-khz N       card clock in kHz (default 3571 = 3571.2)
 *   --link PATH         create a symlink PATH -> slave pty (removed at exit)
 *   --state-file PATH   card-detect line, see above (removed at exit)
 *   --pps-refuse        answer a PPS with FF PPS0' PCK, PPS1 absent: F=372 D=1 stay
 *   --pps-mute          never answer a PPS (the card then waits for a reset)
 *   --procedure-single  T=0 incoming data: procedure byte ~INS before every byte
 *   --t1-max-inf N      the T=1 card sends at most N INF bytes per block (default
 *                       254; the host's IFSD, 32 until S(IFS), also limits it)
 *   --wtx-storm         the T=1 card answers WAIT with S(WTX) requests, forever
 *   -v                  log every exchange (and what it means) to stderr
 * Faults ("answer" = a T=0 command the card starts answering, from its 5-byte header,
 * or a T=1 block the card sends; ATR and PPS are not counted; counts from 1):
 *   --mute              no ATR, never answers; the line still echoes
 *   --no-echo           the wiring does not echo
 *   --bad-echo N        the Nth echoed byte comes back altered (bit 0 flipped)
 *   --silent-after N    after N answers the card goes mute (echo continues) until
 *                       a new card is inserted
 *   --garbage N         7 noise bytes ("GARBAGE") instead of the Nth answer; T=0:
 *                       the card then waits for a new header
 *   --bad-edc N         T=1: the Nth answer block has its EDC corrupted (XOR 5A);
 *                       a retransmission asked for by an R-block is correct
 *   --atr-garbage       after every reset the ATR's first byte is 0x55 (neither 3B
 *                       nor 03), the rest follows
 *   --slow-atr MS       MS milliseconds between ATR bytes
 *
 * Stdout: one line "PTY /dev/pts/N", flushed once the pty is ready (raw, 115200 8N1
 * until the host sets its own line).
 * Signals: SIGUSR1 card removed (it stops answering at once, even in the middle of an
 * answer), SIGUSR2 card inserted (it waits for a reset), SIGTERM/SIGINT/SIGHUP exit 0.
 *
 * Default ATRs (TS 3F instead of 3B with --convention inverse), historical bytes
 * "PHX0"/"PHX1":
 *   t0: 3B 94 13 40 0A 50 48 58 30          TA1 13 (F=372 D=4), TD1 40 -> TC2 0A
 *                                           (WI 10), T=0 only, no TCK
 *   t1: 3B 94 13 81 31 80 45 50 48 58 31 83 TA1 13, TD1 81 -> TD2 31 (T=1): TA3 80
 *                                           (IFSC 128), TB3 45 (BWI 4, CWI 5), LRC
 * After the ATR: FF first starts a PPS (ISO 7816-3 clause 9), anything else is a
 * command in the ATR's first protocol.  A PPS whose PPS1 the card supports (F equal
 * to TA1's or 372, D at most TA1's) is echoed and its F/D apply from the next byte;
 * a bad PCK, or a protocol the ATR does not offer, gets no answer.  With TA2
 * (specific mode) there is no PPS.
 * T=0 (clause 10): header CLA INS P1 P2 P3; outgoing: INS, data, SW1 SW2; incoming:
 * INS (or ~INS per byte), the data, SW1 SW2; unknown INS with P3 > 0: 6D 00 at once;
 * longer answers through 61 xx + GET RESPONSE, wrong Le 6C xx; WAIT (80 E5): three
 * NULL bytes 0x60, 50 ms apart, before its SW.
 * T=1 (clause 11): IFSC from the ATR (an I-block beyond it gets an R-block with an
 * error), LRC or CRC per TC3; I-blocks with chaining both ways, R-blocks, S(IFS),
 * S(RESYNCH), S(ABORT), S(WTX) for WAIT; a bad EDC is answered with R(N(R)) with the
 * EDC error bit; an incomplete block is dropped after 2 s.
 * The application (simcard.c): SELECT, READ BINARY, GET CHALLENGE, ECHO, WAIT.
 * Log, options, pty and signals: simio.c, shared with gemtwin-sim.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include "simcard.h"
#include "simio.h"

#define ATR_DELAY_MS 5          /* reset -> TS */
#define NULL_GAP_MS 50          /* between T=0 NULL bytes on WAIT */
#define T1_PARTIAL_MS 2000      /* an incomplete T=1 block is dropped after this */
#define Q_CAP 2048

/* --card, --absent, --atr, --link, --t1-max-inf (simio.c) */
static struct sim_opts common;

static struct {
    int inverse, convention_set;
    double clock_hz;
    const char *state_file;
    int mute, no_echo, atr_garbage, pps_refuse, pps_mute, procedure_single;
    long bad_echo_nth, silent_after, garbage_nth, bad_edc_nth, slow_atr_ms;
} opt = {
    .clock_hz = 3571200.0,
};

/* TA1 13: F=372 D=4; TD1 40: TC2 follows, T=0; TC2 0A: WI 10 */
static const uint8_t ATR_T0[] = { 0x3B, 0x94, 0x13, 0x40, 0x0A, 'P', 'H', 'X', '0' };
/* TA1 13; TD1 81: TD2 follows, T=1; TD2 31: TA3 TB3 follow, T=1; TA3 80: IFSC 128;
 * TB3 45: BWI 4 CWI 5; no TC3: LRC; TCK */
static const uint8_t ATR_T1[] = { 0x3B, 0x94, 0x13, 0x81, 0x31, 0x80, 0x45,
                                  'P', 'H', 'X', '1', 0x83 };

/* ISO 7816-3 tables 7 and 8 */
static const unsigned fi_table[16] = { 372, 372, 558, 744, 1116, 1488, 1860, 0,
                                       0, 512, 768, 1024, 1536, 2048, 0, 0 };
static const unsigned di_table[16] = { 0, 1, 2, 4, 8, 16, 32, 64, 12, 20, 0, 0, 0, 0, 0, 0 };

/* What the card's ATR promises */
static struct {
    unsigned protocols;         /* bit T set for each T offered */
    int first;                  /* first offered protocol */
    int ta1;                    /* -1: absent */
    int tc1;
    int specific, specific_proto, specific_fd; /* TA2: protocol, use TA1's F/D */
    int ifsc, crc;
} ai;

static struct sim_pty pty;

/* card state */
enum phase {
    PH_OFF,         /* unpowered or not reset yet: waits for a reset */
    PH_ATR,         /* sending the ATR */
    PH_NEGOTIATE,   /* ATR sent: PPS or first command */
    PH_PPS,         /* receiving a PPS request */
    PH_T0_HDR,      /* T=0: receiving a command header */
    PH_T0_DATA,     /* T=0: receiving command data */
    PH_T1,          /* T=1: receiving a block */
    PH_DEAD,        /* erroneous PPS or --mute: silent until the next reset */
};
static const char *const phase_name[] = { "off", "ATR", "negotiate", "PPS", "T=0 header",
                                          "T=0 data", "T=1", "dead" };
static enum phase phase;
static int present, silent;
static int proto;                   /* protocol in use */
static unsigned cur_f = 372, cur_d = 1;
static struct simcard card;
static long answers, echoed;
static uint8_t rxb[SIMCARD_T1_BLOCK_CAP];  /* PPS, T=0 command, T=1 block being received */
static size_t rxn, rxneed;
static double rx_last_ms;

/* the card's output, paced */
#define OUT_ENC 1       /* coded per the convention (noise is not) */
#define OUT_ATR 2       /* ATR byte: only the speed is checked */
#define OUT_ATR_END 4   /* last ATR byte: the card listens after it */
#define OUT_ONE_STOP 8  /* one stop bit is enough (T=1, TC1=255) */
static struct out {
    uint8_t b, flags;
    uint16_t gap_ms;    /* wait before this byte */
    double rate;        /* bps the card sends it at */
} q[Q_CAP];
static size_t q_head, q_len;
static double q_due_ms;

/* ------------------------------------------------------------------------ */

/* ------------------------------------------------------------- the line */

/* Inverse convention seen by a direct-convention UART: complemented, bit-reversed.
 * Its own inverse. */
static uint8_t inverse_byte(uint8_t b)
{
    uint8_t r = 0;
    int i;
    b = (uint8_t)~b;
    for (i = 0; i < 8; i++)
        if (b & (1u << i))
            r |= (uint8_t)(0x80u >> i);
    return r;
}

static uint8_t to_wire(uint8_t b)
{
    return opt.inverse ? inverse_byte(b) : b;
}

#if defined(__linux__) && (defined(__x86_64__) || defined(__i386__) || defined(__aarch64__) || \
                           defined(__arm__) || defined(__riscv))
/* struct termios2 of these architectures; <asm/termbits.h> clashes with <termios.h> */
struct sim_termios2 {
    uint32_t c_iflag, c_oflag, c_cflag, c_lflag;
    uint8_t c_line, c_cc[19];
    uint32_t c_ispeed, c_ospeed;
};
#define SIM_TCGETS2 _IOR('T', 0x2A, struct sim_termios2)
#endif

static const struct {
    speed_t code;
    unsigned bps;
} speeds[] = {
    { B1200, 1200 }, { B2400, 2400 }, { B4800, 4800 }, { B9600, 9600 },
    { B19200, 19200 }, { B38400, 38400 }, { B57600, 57600 }, { B115200, 115200 },
    { B230400, 230400 },
#ifdef B460800
    { B460800, 460800 },
#endif
#ifdef B500000
    { B500000, 500000 },
#endif
#ifdef B921600
    { B921600, 921600 },
#endif
};

/* The host's line settings (the slave's termios, read through the master) */
struct line {
    double bps;         /* 0: unknown */
    int odd, two_stop;
};

static void line_get(struct line *l)
{
    struct termios t;
    speed_t sp;
    size_t i;
    memset(l, 0, sizeof *l);
    if (tcgetattr(pty.mfd, &t) < 0)
        return;
    l->odd = !!(t.c_cflag & PARODD);
    l->two_stop = !!(t.c_cflag & CSTOPB);
    sp = cfgetospeed(&t);
    for (i = 0; i < sizeof speeds / sizeof speeds[0]; i++)
        if (speeds[i].code == sp) {
            l->bps = speeds[i].bps;
            return;
        }
#ifdef SIM_TCGETS2
    {
        /* a custom speed (BOTHER) */
        struct sim_termios2 t2;
        if (ioctl(pty.mfd, SIM_TCGETS2, &t2) == 0)
            l->bps = t2.c_ospeed;
    }
#endif
}

static double card_rate(unsigned f, unsigned d)
{
    return opt.clock_hz * d / f;
}

/* Does the host's line carry the card's bytes at `rate`?  why: what is wrong. */
static int line_ok(const struct line *l, double rate, int atr, int one_stop, char *why, size_t cap)
{
    int bad_speed = l->bps < rate * 0.98 || l->bps > rate * 1.02;
    int bad_parity = !atr && l->odd != opt.inverse;
    int bad_stop = !atr && !one_stop && !l->two_stop;
    if (!bad_speed && !bad_parity && !bad_stop)
        return 1;
    snprintf(why, cap, "host at %.0f bps / parity %s / %d stop bit(s), card expects %.0f bps%s%s",
             l->bps, l->odd ? "odd" : "even-or-none", l->two_stop ? 2 : 1, rate,
             atr ? "" : opt.inverse ? " / parity odd" : " / parity even",
             atr ? "" : one_stop ? " / 1 stop bit" : " / 2 stop bits");
    return 0;
}

/* 1 stop bit is allowed in T=1 with TC1=255 (guard time 11 etu); right after the
 * ATR a T=1 block may come as well as a PPS (which needs 12 etu). */
static int one_stop_ok(void)
{
    return ai.tc1 == 255 &&
           (phase == PH_T1 || (phase == PH_NEGOTIATE && !ai.specific && ai.first == 1));
}

static void q_clear(void)
{
    q_head = q_len = 0;
}

static void q_add(uint8_t b, int flags, unsigned gap_ms)
{
    struct out *o;
    if (q_head + q_len == Q_CAP) {
        if (q_head == 0) {
            sim_logf("card output queue full: byte dropped");
            return;
        }
        memmove(q, q + q_head, q_len * sizeof q[0]);
        q_head = 0;
    }
    o = &q[q_head + q_len];
    o->b = b;
    o->flags = (uint8_t)(flags | (one_stop_ok() ? OUT_ONE_STOP : 0));
    o->gap_ms = (uint16_t)gap_ms;
    o->rate = card_rate(cur_f, cur_d);
    if (q_len++ == 0)
        q_due_ms = sim_now_ms() + gap_ms;
}

static void q_addv(const uint8_t *p, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        q_add(p[i], OUT_ENC, 0);
}

static void enter_protocol(int t);

/* Send what is due: a burst up to the next paced byte. */
static void q_run(void)
{
    uint8_t buf[Q_CAP];
    size_t n = 0;
    struct line l;
    int have_line = 0, logged = 0;
    while (q_len && sim_now_ms() >= q_due_ms) {
        struct out *o = &q[q_head];
        char why[200];
        uint8_t b = o->flags & OUT_ENC ? to_wire(o->b) : o->b;
        if (!have_line) {
            line_get(&l);
            have_line = 1;
        }
        if (!line_ok(&l, o->rate, o->flags & OUT_ATR, o->flags & OUT_ONE_STOP, why, sizeof why)) {
            if (!logged)
                sim_logf("%s: the card's bytes reach the host as garbage (0xFF)", why);
            logged = 1;
            b = 0xFF;
        }
        buf[n++] = b;
        if (o->flags & OUT_ATR_END) {
            if (ai.specific) {
                if (ai.specific_fd && ai.ta1 >= 0) {
                    cur_f = fi_table[ai.ta1 >> 4];
                    cur_d = di_table[ai.ta1 & 15];
                }
                sim_logf("ATR sent: specific mode, T=%d, F=%u D=%u", ai.specific_proto, cur_f, cur_d);
                enter_protocol(ai.specific_proto);
            } else {
                sim_logf("ATR sent: waiting for a PPS or a T=%d command", ai.first);
                phase = PH_NEGOTIATE;
            }
        }
        q_head++;
        if (--q_len == 0) {
            q_head = 0;
            break;
        }
        q_due_ms = sim_now_ms() + q[q_head].gap_ms;
        if (q[q_head].gap_ms)
            break;
    }
    if (n)
        sim_put(&pty, buf, n);
}

/* --------------------------------------------------------- card events */

static void write_state(void)
{
    char tmp[4096];
    int fd;
    if (!opt.state_file)
        return;
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", opt.state_file) >= sizeof tmp)
        sim_die("--state-file: path too long");
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || write(fd, present ? "1\n" : "0\n", 2) != 2 || close(fd) < 0 ||
        rename(tmp, opt.state_file) < 0)
        sim_die("--state-file %s: %s", opt.state_file, strerror(errno));
}

static void card_reset(uint8_t status)
{
    size_t i;
    if (!present) {
        sim_logf("RESET (line status %02X): no card", status);
        return;
    }
    q_clear();
    rxn = 0;
    simcard_reset(&card);
    cur_f = 372;
    cur_d = 1;
    if (opt.mute || silent) {
        sim_logf("RESET (line status %02X): the card stays mute (%s)", status,
              opt.mute ? "--mute" : "--silent-after");
        phase = PH_DEAD;
        return;
    }
    phase = PH_ATR;
    sim_logf("RESET (line status %02X): ATR in %d ms", status, ATR_DELAY_MS);
    for (i = 0; i < common.atr_len; i++) {
        int flags = OUT_ENC | OUT_ATR | (i + 1 == common.atr_len ? OUT_ATR_END : 0);
        unsigned gap = i == 0 ? ATR_DELAY_MS : (unsigned)opt.slow_atr_ms;
        if (i == 0 && opt.atr_garbage)
            q_add(0x55, flags & ~OUT_ENC, gap);
        else
            q_add(common.atr[i], flags, gap);
    }
    if (opt.atr_garbage)
        sim_logf("ATR with a bogus first byte 55 (--atr-garbage)");
    sim_loghex(opt.inverse ? "card< ATR (inverse convention)" : "card< ATR", common.atr, common.atr_len);
}

static void card_event(int insert)
{
    if (insert == present) {
        sim_logf("%s: card already %s", insert ? "SIGUSR2" : "SIGUSR1",
              insert ? "present" : "absent");
        return;
    }
    present = insert;
    q_clear();
    rxn = 0;
    phase = PH_OFF;
    if (insert)
        silent = 0;         /* a new card */
    simcard_reset(&card);
    write_state();
    sim_logf("card %s", insert ? "inserted (waits for a reset)" : "removed");
}

/* ------------------------------------------------------------ the card */

/* The card is about to answer (T=0 command or T=1 block): the faults that replace
 * the answer.  Returns 1 when the card answers normally. */
static int answer_begin(void)
{
    static const uint8_t noise[] = "GARBAGE";
    if (opt.silent_after > 0 && answers >= opt.silent_after) {
        if (!silent)
            sim_logf("silent from now on (--silent-after %ld)", opt.silent_after);
        silent = 1;
        phase = PH_DEAD;
        return 0;
    }
    answers++;
    if (opt.garbage_nth == answers) {
        size_t i;
        sim_loghex("card< noise instead of the answer (--garbage)", noise, sizeof noise - 1);
        for (i = 0; i + 1 < sizeof noise; i++)
            q_add(noise[i], 0, 0);
        return 0;
    }
    return 1;
}

static void enter_protocol(int t)
{
    proto = t;
    rxn = 0;
    phase = t == 1 ? PH_T1 : PH_T0_HDR;
    card.t1_ifsc = ai.ifsc;
    card.t1_crc = ai.crc;
}

static int pps1_supported(uint8_t pps1)
{
    unsigned f = fi_table[pps1 >> 4], d = di_table[pps1 & 15];
    unsigned cf = 372, cd = 1;
    if (!f || !d)
        return 0;
    if (ai.ta1 >= 0) {
        cf = fi_table[ai.ta1 >> 4];
        cd = di_table[ai.ta1 & 15];
    }
    return (f == cf || f == 372) && d <= cd;
}

static void pps_request(void)
{
    uint8_t x = 0, ans[6];
    size_t i, n = rxn;
    int t = rxb[1] & 0x0F, has1 = !!(rxb[1] & 0x10);
    sim_loghex("host> PPS request", rxb, n);
    for (i = 0; i < n; i++)
        x ^= rxb[i];
    phase = PH_DEAD;
    if (x) {
        sim_logf("PPS: bad PCK, no answer (the card waits for a reset)");
        return;
    }
    if (t > 15 || !(ai.protocols & (1u << t))) {
        sim_logf("PPS: T=%d not offered by the ATR, no answer", t);
        return;
    }
    if (opt.pps_mute) {
        sim_logf("PPS: no answer (--pps-mute)");
        return;
    }
    if (!opt.pps_refuse && (!has1 || pps1_supported(rxb[2]))) {
        q_addv(rxb, n);
        sim_loghex("card< PPS accepted (echo)", rxb, n);
        if (has1) {
            cur_f = fi_table[rxb[2] >> 4];
            cur_d = di_table[rxb[2] & 15];
        }
    } else {
        ans[0] = 0xFF;
        ans[1] = (uint8_t)t;
        ans[2] = (uint8_t)(ans[0] ^ ans[1]);
        q_addv(ans, 3);
        sim_loghex(opt.pps_refuse ? "card< PPS without PPS1 (--pps-refuse)" : "card< PPS without PPS1 (unsupported)",
               ans, 3);
    }
    sim_logf("PPS: T=%d, F=%u D=%u: %.0f bps from the next byte", t, cur_f, cur_d,
          card_rate(cur_f, cur_d));
    enter_protocol(t);
}

static void t0_sw(const uint8_t *sw)
{
    q_addv(sw, 2);
}

static void t0_header(void)
{
    uint8_t r[260];
    size_t rl;
    int wait;
    enum simcard_t0_kind kind = simcard_t0_kind(rxb);
    static const char *const kind_name[] = { "outgoing", "incoming", "no data", "unknown INS" };
    char what[80];
    snprintf(what, sizeof what, "host> T=0 header (%s)", kind_name[kind]);
    sim_loghex(what, rxb, 5);
    phase = PH_T0_HDR;
    rxn = 0;
    if (!answer_begin())
        return;
    switch (kind) {
    case SIMCARD_T0_OUT:
    case SIMCARD_T0_NODATA:
        rl = simcard_t0_tpdu(&card, rxb, 5, r, &wait);
        if (card.hang) {
            sim_logf("card: HANG, mute until the next reset");
            phase = PH_DEAD;
            break;
        }
        if (wait) {
            int i;
            static const uint8_t nul = 0x60;
            for (i = 0; i < 3; i++)
                q_add(nul, OUT_ENC, i ? NULL_GAP_MS : 0);
            sim_logf("card< 3 NULL bytes 60, %d ms apart (WAIT)", NULL_GAP_MS);
            q_add(r[0], OUT_ENC, NULL_GAP_MS);
            q_add(r[1], OUT_ENC, 0);
            sim_loghex("card< SW", r, 2);
            break;
        }
        if (rl > 2) {
            q_add(rxb[1], OUT_ENC, 0);
            q_addv(r, rl);
            sim_logf("card< procedure byte %02X (INS), %zu data bytes, SW %02X %02X", rxb[1],
                  rl - 2, r[rl - 2], r[rl - 1]);
            sim_loghex("card< data", r, rl - 2);
        } else {
            t0_sw(r);
            sim_loghex("card< SW", r, 2);
        }
        break;
    case SIMCARD_T0_IN: {
        uint8_t pb = opt.procedure_single ? (uint8_t)~rxb[1] : rxb[1];
        q_add(pb, OUT_ENC, 0);
        sim_logf("card< procedure byte %02X (%s), expecting %u data bytes", pb,
              opt.procedure_single ? "~INS: one byte" : "INS: all", rxb[4]);
        rxn = 5;
        rxneed = 5u + rxb[4];
        phase = PH_T0_DATA;
        break;
    }
    case SIMCARD_T0_REFUSE: {
        static const uint8_t sw[2] = { 0x6D, 0x00 };
        t0_sw(sw);
        sim_loghex("card< SW (INS not supported)", sw, 2);
        break;
    }
    }
}

static void t0_data_done(void)
{
    uint8_t r[260];
    int wait;
    sim_loghex("host> T=0 data", rxb + 5, rxn - 5);
    simcard_t0_tpdu(&card, rxb, rxn, r, &wait);     /* SW only: 61 xx, 90 00, ... */
    t0_sw(r);
    sim_loghex("card< SW", r, 2);
    phase = PH_T0_HDR;
    rxn = 0;
}

static void t1_describe(const uint8_t *b, size_t n, char *s, size_t cap)
{
    static const char *const sname[4] = { "RESYNCH", "IFS", "ABORT", "WTX" };
    uint8_t pcb = b[1];
    if (n < 3)
        snprintf(s, cap, "short block");
    else if (!(pcb & 0x80))
        snprintf(s, cap, "I(%d,%d)", (pcb >> 6) & 1, (pcb >> 5) & 1);
    else if ((pcb & 0xC0) == 0x80)
        snprintf(s, cap, "R(%d)%s", (pcb >> 4) & 1,
                 (pcb & 3) == 0 ? "" : (pcb & 3) == 1 ? " EDC error" : " other error");
    else
        snprintf(s, cap, "S(%s %s)", sname[pcb & 3], pcb & 0x20 ? "response" : "request");
}

static void t1_got_block(void)
{
    uint8_t out[SIMCARD_T1_BLOCK_CAP];
    size_t n;
    char d[48], what[128];
    t1_describe(rxb, rxn, d, sizeof d);
    snprintf(what, sizeof what, "host> T=1 %s", d);
    sim_loghex(what, rxb, rxn);
    n = simcard_t1_block(&card, rxb, rxn, out);
    rxn = 0;
    if (card.hang) {
        sim_logf("card: HANG, mute until the next reset");
        phase = PH_DEAD;
        return;
    }
    if (!answer_begin())
        return;
    t1_describe(out, n, d, sizeof d);
    if (opt.bad_edc_nth == answers) {
        out[n - 1] ^= 0x5A;
        snprintf(what, sizeof what, "card< T=1 %s (EDC corrupted: --bad-edc)", d);
    } else {
        snprintf(what, sizeof what, "card< T=1 %s", d);
    }
    sim_loghex(what, out, n);
    q_addv(out, n);
}

/* One byte from the host, decoded, as the card receives it */
static void card_rx(uint8_t b)
{
    switch (phase) {
    case PH_OFF:
    case PH_ATR:
    case PH_DEAD:
        return;
    case PH_NEGOTIATE:
        if (b == 0xFF) {
            phase = PH_PPS;
            rxb[0] = b;
            rxn = 1;
            rxneed = 2;
            return;
        }
        enter_protocol(ai.first);
        sim_logf("no PPS: T=%d (implicit selection)", proto);
        card_rx(b);
        return;
    case PH_PPS:
        rxb[rxn++] = b;
        if (rxn == 2)
            rxneed = 3u + !!(b & 0x10) + !!(b & 0x20) + !!(b & 0x40);
        if (rxn == rxneed)
            pps_request();
        return;
    case PH_T0_HDR:
        rxb[rxn++] = b;
        if (rxn == 5)
            t0_header();
        return;
    case PH_T0_DATA:
        rxb[rxn++] = b;
        if (rxn == rxneed)
            t0_data_done();
        else if (opt.procedure_single)
            q_add((uint8_t)~rxb[1], OUT_ENC, 0);
        return;
    case PH_T1:
        rxb[rxn++] = b;
        rx_last_ms = sim_now_ms();
        if (rxn == 3)
            rxneed = 3u + rxb[2] + simcard_t1_edc_len(&card);
        if (rxn >= 3 && rxn == rxneed)
            t1_got_block();
        return;
    }
}

/* Bytes the host wrote: the wiring echoes them, then the card may hear them. */
static void host_bytes(uint8_t *p, size_t n)
{
    size_t i;
    struct line l;
    char why[200];
    sim_loghex(opt.inverse ? "host> wire bytes (inverse)" : "host> bytes", p, n);
    if (!opt.no_echo) {
        uint8_t e[4096];
        memcpy(e, p, n);
        for (i = 0; i < n; i++)
            if (++echoed == opt.bad_echo_nth) {
                e[i] ^= 0x01;
                sim_logf("echo byte %ld altered: %02X -> %02X (--bad-echo)", echoed, p[i], e[i]);
            }
        sim_put(&pty, e, n);
    }
    if (!present)
        return;
    if (silent || phase == PH_OFF || phase == PH_ATR || phase == PH_DEAD) {
        sim_logf("card not listening (%s%s): %zu host bytes ignored", phase_name[phase],
              silent ? ", silent" : "", n);
        return;
    }
    line_get(&l);
    if (!line_ok(&l, card_rate(cur_f, cur_d), 0, one_stop_ok(), why, sizeof why)) {
        sim_logf("%s: the card sees garbage, %zu host bytes ignored", why, n);
        return;
    }
    for (i = 0; i < n && present && !silent; i++)
        card_rx(opt.inverse ? inverse_byte(p[i]) : p[i]);
}

/* ------------------------------------------------------------------ setup */

/* counts and milliseconds: at most a million */
static long num_arg(int argc, char **argv, int *i)
{
    return sim_num_arg(argc, argv, i, 1000000);
}

static _Noreturn void usage(void)
{
    fprintf(stderr,
            "usage: phoenix-sim [--card t0|t1|none] [--absent] [--convention direct|inverse]\n"
            "         [--atr HEX] [--clock-khz N] [--link PATH] [--state-file PATH]\n"
            "         [--pps-refuse | --pps-mute] [--procedure-single] [--t1-max-inf N]\n"
            "         [--wtx-storm]\n"
            "         [--mute] [--no-echo] [--bad-echo N] [--silent-after N] [--garbage N]\n"
            "         [--bad-edc N] [--atr-garbage] [--slow-atr MS] [-v]\n"
            "Prints 'PTY /dev/pts/N'; a flush of the pty resets the card;\n"
            "SIGUSR1 removes the card, SIGUSR2 inserts it.\n");
    exit(2);
}

/* What the ATR offers (ISO 7816-3 clause 8); NULL if well formed, else why not. */
static const char *atr_parse(const uint8_t *a, size_t n)
{
    size_t i = 2, k;
    unsigned y, level = 1;
    int cur_t = -1, t1_done = 0, tck = 0;
    memset(&ai, 0, sizeof ai);
    ai.ta1 = -1;
    ai.first = -1;
    ai.ifsc = 32;
    if (n < 2)
        return "shorter than TS T0";
    if (a[0] != 0x3B && a[0] != 0x3F)
        return "TS is neither 3B nor 3F";
    y = a[1] >> 4;
    k = a[1] & 15;
    for (;;) {
        int tx[4] = { -1, -1, -1, -1 }, j;
        for (j = 0; j < 4; j++)
            if (y & (1u << j)) {
                if (i >= n)
                    return "truncated in the interface bytes";
                tx[j] = a[i++];
            }
        if (level == 1) {
            ai.ta1 = tx[0];
            ai.tc1 = tx[2] < 0 ? 0 : tx[2];
        } else if (level == 2 && tx[0] >= 0) {
            ai.specific = 1;
            ai.specific_proto = tx[0] & 15;
            ai.specific_fd = !(tx[0] & 0x10);
        } else if (level >= 3 && cur_t == 1 && !t1_done) {
            /* first interface bytes for T=1 */
            t1_done = 1;
            if (tx[0] >= 0)
                ai.ifsc = tx[0];
            if (tx[2] >= 0)
                ai.crc = tx[2] & 1;
        }
        if (tx[3] < 0)
            break;
        cur_t = tx[3] & 15;
        if (cur_t != 15) {
            ai.protocols |= 1u << cur_t;
            if (ai.first < 0)
                ai.first = cur_t;
        }
        if (cur_t != 0)
            tck = 1;
        y = (unsigned)tx[3] >> 4;
        level++;
    }
    if (ai.first < 0) {
        ai.first = 0;
        ai.protocols = 1;
    }
    if (i + k + (size_t)tck != n)
        return "length does not match T0/TDi and the historical bytes";
    if (tck) {
        uint8_t x = 0;
        for (i = 1; i < n; i++)
            x ^= a[i];
        if (x)
            return "wrong TCK";
    }
    if (ai.specific && !(ai.protocols & (1u << ai.specific_proto)))
        return "TA2 names a protocol not offered";
    if (ai.ifsc == 0 || ai.ifsc == 255)
        return "IFSC out of range";
    return NULL;
}

/* The options of phoenix-sim alone (simio.c parses the common ones); 0: not one. */
static int option(int argc, char **argv, int *i)
{
    const char *a = argv[*i];
    if (!strcmp(a, "--convention")) {
        if (++*i >= argc)
            usage();
        if (!strcmp(argv[*i], "direct"))
            opt.inverse = 0;
        else if (!strcmp(argv[*i], "inverse"))
            opt.inverse = 1;
        else
            sim_die("--convention: direct or inverse");
        opt.convention_set = 1;
    } else if (!strcmp(a, "--clock-khz")) {
        char *end;
        double khz;
        if (++*i >= argc)
            usage();
        khz = strtod(argv[*i], &end);
        if (*end || khz < 1000 || khz > 20000)
            sim_die("--clock-khz: 1000..20000");
        /* 3571 stands for 3571.2: 372 clocks per etu are exactly 9600 bps */
        opt.clock_hz = khz == 3571 ? 3571200.0 : khz * 1000.0;
    } else if (!strcmp(a, "--state-file")) {
        if (++*i >= argc)
            usage();
        opt.state_file = argv[*i];
        sim_remove_at_exit(opt.state_file);
    } else if (!strcmp(a, "--pps-refuse"))
        opt.pps_refuse = 1;
    else if (!strcmp(a, "--pps-mute"))
        opt.pps_mute = 1;
    else if (!strcmp(a, "--procedure-single"))
        opt.procedure_single = 1;
    else if (!strcmp(a, "--mute"))
        opt.mute = 1;
    else if (!strcmp(a, "--no-echo"))
        opt.no_echo = 1;
    else if (!strcmp(a, "--bad-echo"))
        opt.bad_echo_nth = num_arg(argc, argv, i);
    else if (!strcmp(a, "--silent-after"))
        opt.silent_after = num_arg(argc, argv, i);
    else if (!strcmp(a, "--garbage"))
        opt.garbage_nth = num_arg(argc, argv, i);
    else if (!strcmp(a, "--bad-edc"))
        opt.bad_edc_nth = num_arg(argc, argv, i);
    else if (!strcmp(a, "--atr-garbage"))
        opt.atr_garbage = 1;
    else if (!strcmp(a, "--slow-atr")) {
        opt.slow_atr_ms = num_arg(argc, argv, i);
        if (opt.slow_atr_ms > 60000)
            sim_die("--slow-atr: at most 60000 ms");
    } else
        return 0;
    return 1;
}

int main(int argc, char **argv)
{
    int one = 1;
    const char *bad;

    sim_init("phoenix-sim");
    sim_parse_args(argc, argv, &common, option, usage);
    if (common.atr_len) {
        if (!opt.convention_set)
            opt.inverse = common.atr[0] == 0x3F;
        else if (common.atr[0] != (opt.inverse ? 0x3F : 0x3B))
            fprintf(stderr, "phoenix-sim: warning: --atr TS %02X with the %s convention\n",
                    common.atr[0], opt.inverse ? "inverse" : "direct");
    } else {
        const uint8_t *atr = common.card == SIM_CARD_T0 ? ATR_T0 : ATR_T1;
        common.atr_len = common.card == SIM_CARD_T0 ? sizeof ATR_T0 : sizeof ATR_T1;
        memcpy(common.atr, atr, common.atr_len);
        common.atr[0] = opt.inverse ? 0x3F : 0x3B;
    }
    bad = atr_parse(common.atr, common.atr_len);
    if (bad)
        fprintf(stderr, "phoenix-sim: warning: ATR: %s\n", bad);
    simcard_init(&card);
    card.t1_max_inf = common.t1_max_inf;
    card.t1_wtx_storm = common.wtx_storm;
    present = !(common.absent || common.card_none);
    phase = PH_OFF;

    sim_signals_init();
    sim_pty_open(&pty, 0, 1);
    /* Packet mode: the host's flushes reach us as status bytes (the reset). */
    if (ioctl(pty.mfd, TIOCPKT, &one) < 0)
        sim_die("TIOCPKT: %s", strerror(errno));
    write_state();
    sim_pty_ready(&pty, common.link);
    sim_loghex("ATR", common.atr, common.atr_len);
    sim_logf("reader ready on %s: card %s%s, %s convention, %.1f kHz, first protocol T=%d",
             pty.slave, common.card == SIM_CARD_T0 ? "T=0" : "T=1",
             present ? "" : " (absent)", opt.inverse ? "inverse" : "direct", opt.clock_hz / 1e3,
             ai.first);

    for (;;) {
        double now = sim_now_ms(), until = -1;
        int timeout;
        short ev;
        if (q_len)
            until = q_due_ms;
        if (phase == PH_T1 && rxn && (until < 0 || rx_last_ms + T1_PARTIAL_MS < until))
            until = rx_last_ms + T1_PARTIAL_MS;
        timeout = until < 0 ? -1 : until <= now ? 0 : (int)(until - now) + 1;
        sim_wait(&pty, timeout, card_event, &ev);
        if (ev & (POLLIN | POLLHUP | POLLERR)) {
            uint8_t buf[1 + 4096];
            ssize_t k = sim_pty_read(&pty, buf, sizeof buf);
            if (k <= 0)
                continue;
            if (buf[0] == TIOCPKT_DATA) {
                if (k > 1)
                    host_bytes(buf + 1, (size_t)k - 1);
            } else if (buf[0] & (TIOCPKT_FLUSHREAD | TIOCPKT_FLUSHWRITE)) {
                card_reset(buf[0]);
            } else {
                sim_logf("line status %02X ignored", buf[0]);
            }
        }
        if (phase == PH_T1 && rxn && sim_now_ms() >= rx_last_ms + T1_PARTIAL_MS) {
            sim_loghex("host> incomplete T=1 block dropped", rxb, rxn);
            rxn = 0;
        }
        q_run();
    }
}
