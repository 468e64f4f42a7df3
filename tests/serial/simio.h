/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * simio: the plumbing the serial test peers (gemtwin-sim, phoenix-sim) share around
 * their reader and card: log lines and fatal errors on stderr, the options both
 * take, the pseudo-terminal they serve the host on, and signals turned into events
 * of their poll loop.
 */
#ifndef SIMIO_H
#define SIMIO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <termios.h>

#if defined(__GNUC__) || defined(__clang__)
#define SIM_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define SIM_PRINTF(f, a)
#endif

extern int sim_verbose;             /* -v: sim_logf() and sim_loghex() print */

/* First thing in main: the program's name (log lines, errors); starts the clock. */
void sim_init(const char *prog);
/* Milliseconds since sim_init() */
double sim_now_ms(void);

/* A log line (no newline), shown with -v */
void sim_logf(const char *fmt, ...) SIM_PRINTF(1, 2);
void sim_loghex(const char *what, const uint8_t *p, size_t n);

/* A file the program creates (--link, --state-file): removed by sim_die() and at
 * the exit on SIGTERM/SIGINT/SIGHUP (up to 4). */
void sim_remove_at_exit(const char *path);
_Noreturn void sim_die(const char *fmt, ...) SIM_PRINTF(1, 2);

void sim_sleep_ms(long ms);

/* Options: the value after argv[*i] (*i moves on to it) */
long sim_num_arg(int argc, char **argv, int *i, long max);

enum sim_card_type { SIM_CARD_T0, SIM_CARD_T1 };

/* The options both simulators take the same way */
struct sim_opts {
    enum sim_card_type card;
    int card_none;                  /* --card none: empty, a T=1 card inserted later */
    int absent;
    uint8_t atr[33];
    size_t atr_len;                 /* 0: no --atr */
    const char *link;
    int t1_max_inf;
    int wtx_storm;      /* --wtx-storm: T=1 WAIT answered by S(WTX) requests forever */
};
/* The command line: the options above into o (defaults: a T=1 card, T=1 blocks of
 * up to 254 INF bytes), -v, and the program's own through own_opt, which returns 0
 * for one it does not know; usage() on that or on a missing value. */
void sim_parse_args(int argc, char **argv, struct sim_opts *o,
                    int (*own_opt)(int argc, char **argv, int *i), void (*usage)(void));

/* The pty the host opens (its slave): raw at 115200 bps, 8 data bits, stop_bits (1
 * or 2) and the input flags iflag, until the host sets its own line. */
struct sim_pty {
    int mfd, sfd;
    char slave[128];
};
void sim_set_raw(int fd, tcflag_t iflag, int stop_bits);
void sim_pty_open(struct sim_pty *p, tcflag_t iflag, int stop_bits);
/* The master non-blocking, the --link symlink, then "PTY /dev/pts/N" on stdout. */
void sim_pty_ready(const struct sim_pty *p, const char *link);
/* Bytes the host wrote; 0 when there are none (after a pause on an error). */
ssize_t sim_pty_read(const struct sim_pty *p, void *buf, size_t cap);
/* Write everything, waiting at most 2 s for room (nobody may be reading). */
void sim_put(const struct sim_pty *p, const uint8_t *b, size_t n);

/* SIGUSR1 (card removed), SIGUSR2 (card inserted), SIGTERM/SIGINT/SIGHUP (exit 0)
 * reach sim_wait() through a pipe. */
void sim_signals_init(void);
/* Waits up to timeout_ms (-1: no limit) for the host; card movements go to
 * card_event (1: inserted), an exit signal exits.  Returns poll()'s count (0: the
 * time ran out), the master's events in *revents. */
int sim_wait(const struct sim_pty *p, int timeout_ms, void (*card_event)(int insert),
             short *revents);

#endif
