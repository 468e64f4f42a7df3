/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * simio: the plumbing of the serial test peers (gemtwin-sim, phoenix-sim): logging,
 * errors, common options, the pty and the signals.  See simio.h.
 */
#if !defined(_GNU_SOURCE) && !defined(_XOPEN_SOURCE)
#define _XOPEN_SOURCE 700
#endif
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "simcard.h"
#include "simio.h"

int sim_verbose;

static const char *prog = "sim";
static struct timespec t_start;
static const char *remove_at_exit[4];
static int sigpipe_fd[2] = { -1, -1 };

void sim_init(const char *name)
{
    prog = name;
    clock_gettime(CLOCK_MONOTONIC, &t_start);
}

double sim_now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t_start.tv_sec) * 1e3 + (double)(t.tv_nsec - t_start.tv_nsec) / 1e6;
}

/* ---------------------------------------------------------------- logging */

static void vlogf_(const char *fmt, va_list ap) SIM_PRINTF(1, 0);
static void vlogf_(const char *fmt, va_list ap)
{
    if (!sim_verbose)
        return;
    fprintf(stderr, "%s [%8.3f] ", prog, sim_now_ms() / 1e3);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

void sim_logf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlogf_(fmt, ap);
    va_end(ap);
}

/* the card model's log (simcard.c) */
void simcard_log(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlogf_(fmt, ap);
    va_end(ap);
}

void sim_loghex(const char *what, const uint8_t *p, size_t n)
{
    size_t i;
    if (!sim_verbose)
        return;
    fprintf(stderr, "%s [%8.3f] %s (%zu):", prog, sim_now_ms() / 1e3, what, n);
    for (i = 0; i < n; i++)
        fprintf(stderr, " %02X", p[i]);
    fputc('\n', stderr);
}

void sim_remove_at_exit(const char *path)
{
    size_t i;
    for (i = 0; i < sizeof remove_at_exit / sizeof remove_at_exit[0]; i++)
        if (!remove_at_exit[i] || !strcmp(remove_at_exit[i], path)) {
            remove_at_exit[i] = path;
            return;
        }
}

static void cleanup(void)
{
    size_t i;
    for (i = 0; i < sizeof remove_at_exit / sizeof remove_at_exit[0]; i++)
        if (remove_at_exit[i])
            unlink(remove_at_exit[i]);
}

void sim_die(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    cleanup();
    exit(1);
}

void sim_sleep_ms(long ms)
{
    struct timespec ts;
    if (ms <= 0)
        return;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

/* ---------------------------------------------------------------- options */

long sim_num_arg(int argc, char **argv, int *i, long max)
{
    char *end;
    long v;
    if (*i + 1 >= argc)
        sim_die("%s needs a number", argv[*i]);
    v = strtol(argv[++*i], &end, 10);
    if (*end || v < 0 || v > max)
        sim_die("%s: bad number '%s'", argv[*i - 1], argv[*i]);
    return v;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* --atr HEX: pairs of hex digits, spaces and colons between them ignored */
static void parse_atr(const char *s, struct sim_opts *o)
{
    size_t n = 0;
    while (*s) {
        int hi, lo;
        if (*s == ' ' || *s == ':') {
            s++;
            continue;
        }
        hi = hexval(s[0]);
        lo = s[1] ? hexval(s[1]) : -1;
        if (n >= sizeof o->atr || hi < 0 || lo < 0)
            sim_die("bad --atr");
        o->atr[n++] = (uint8_t)(hi << 4 | lo);
        s += 2;
    }
    if (n < 2)
        sim_die("bad --atr");
    o->atr_len = n;
}

/* argv[*i] if it is one of the common options: 1 (*i past its value), -1 when the
 * value is missing, 0 if not one. */
static int common_opt(int argc, char **argv, int *i, struct sim_opts *o)
{
    const char *a = argv[*i];
    if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
        sim_verbose = 1;
        return 1;
    }
    if (!strcmp(a, "--absent")) {
        o->absent = 1;
        return 1;
    }
    if (!strcmp(a, "--wtx-storm")) {
        o->wtx_storm = 1;
        return 1;
    }
    if (!strcmp(a, "--t1-max-inf")) {
        o->t1_max_inf = (int)sim_num_arg(argc, argv, i, LONG_MAX);
        if (o->t1_max_inf < 1 || o->t1_max_inf > 254)
            sim_die("--t1-max-inf: 1..254");
        return 1;
    }
    if (strcmp(a, "--card") && strcmp(a, "--atr") && strcmp(a, "--link"))
        return 0;
    /* the options with a string value */
    if (++*i >= argc)
        return -1;
    if (!strcmp(a, "--atr")) {
        parse_atr(argv[*i], o);
    } else if (!strcmp(a, "--link")) {
        o->link = argv[*i];
        sim_remove_at_exit(o->link);
    } else if (!strcmp(argv[*i], "t0")) {
        o->card = SIM_CARD_T0;
    } else if (!strcmp(argv[*i], "t1")) {
        o->card = SIM_CARD_T1;
    } else if (!strcmp(argv[*i], "none")) {
        o->card_none = 1;
        o->card = SIM_CARD_T1;      /* the card inserted later */
    } else {
        sim_die("--card: t0, t1 or none");
    }
    return 1;
}

void sim_parse_args(int argc, char **argv, struct sim_opts *o,
                    int (*own_opt)(int argc, char **argv, int *i), void (*usage)(void))
{
    int i, known;
    memset(o, 0, sizeof *o);
    o->card = SIM_CARD_T1;
    o->t1_max_inf = 254;
    for (i = 1; i < argc; i++) {
        known = common_opt(argc, argv, &i, o);
        if (known == 0)
            known = own_opt(argc, argv, &i);
        if (known <= 0)
            usage();
    }
}

/* -------------------------------------------------------------------- pty */

void sim_set_raw(int fd, tcflag_t iflag, int stop_bits)
{
    struct termios t;
    if (tcgetattr(fd, &t) < 0)
        sim_die("tcgetattr: %s", strerror(errno));
    t.c_iflag = iflag;
    t.c_oflag = 0;
    t.c_lflag = 0;
    t.c_cflag = CS8 | CREAD | CLOCAL | (stop_bits == 2 ? CSTOPB : 0);
    t.c_cc[VMIN] = 1;
    t.c_cc[VTIME] = 0;
    cfsetispeed(&t, B115200);
    cfsetospeed(&t, B115200);
    if (tcsetattr(fd, TCSANOW, &t) < 0)
        sim_die("tcsetattr: %s", strerror(errno));
}

void sim_pty_open(struct sim_pty *p, tcflag_t iflag, int stop_bits)
{
    const char *sn;
    p->mfd = posix_openpt(O_RDWR | O_NOCTTY);
    if (p->mfd < 0)
        sim_die("posix_openpt: %s", strerror(errno));
    if (grantpt(p->mfd) < 0 || unlockpt(p->mfd) < 0)
        sim_die("grantpt/unlockpt: %s", strerror(errno));
    sn = ptsname(p->mfd);
    if (!sn || strlen(sn) >= sizeof p->slave)
        sim_die("ptsname failed");
    strcpy(p->slave, sn);
    /* Keep a slave descriptor: the master never sees a hang-up between host
     * opens, and the slave's line settings (raw: no echo by the tty layer!)
     * stay as set here until the host sets its own. */
    p->sfd = open(p->slave, O_RDWR | O_NOCTTY);
    if (p->sfd < 0)
        sim_die("open %s: %s", p->slave, strerror(errno));
    sim_set_raw(p->sfd, iflag, stop_bits);
}

void sim_pty_ready(const struct sim_pty *p, const char *link)
{
    fcntl(p->mfd, F_SETFL, O_NONBLOCK);
    fcntl(p->mfd, F_SETFD, FD_CLOEXEC);
    fcntl(p->sfd, F_SETFD, FD_CLOEXEC);
    if (link) {
        unlink(link);
        if (symlink(p->slave, link) < 0)
            sim_die("symlink %s: %s", link, strerror(errno));
    }
    printf("PTY %s\n", p->slave);
    fflush(stdout);
}

ssize_t sim_pty_read(const struct sim_pty *p, void *buf, size_t cap)
{
    ssize_t k = read(p->mfd, buf, cap);
    if (k < 0 && (errno == EAGAIN || errno == EINTR))
        return 0;
    if (k <= 0) {
        /* EIO: no slave open (cannot happen while we hold one) */
        sim_sleep_ms(50);
        return 0;
    }
    return k;
}

void sim_put(const struct sim_pty *p, const uint8_t *b, size_t n)
{
    while (n > 0) {
        ssize_t w = write(p->mfd, b, n);
        if (w > 0) {
            b += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd pf = { .fd = p->mfd, .events = POLLOUT };
            if (poll(&pf, 1, 2000) <= 0) {
                sim_logf("output stalled: %zu bytes dropped", n);
                return;
            }
            continue;
        }
        sim_logf("write error: %s", strerror(errno));
        return;
    }
}

/* ---------------------------------------------------------------- signals */

static void on_signal(int sig)
{
    int saved = errno;
    char c = sig == SIGUSR1 ? 'R' : sig == SIGUSR2 ? 'I' : 'T';
    if (write(sigpipe_fd[1], &c, 1) < 0) {
        /* nothing sensible to do in a signal handler */
    }
    errno = saved;
}

void sim_signals_init(void)
{
    struct sigaction sa;
    if (pipe(sigpipe_fd) < 0)
        sim_die("pipe: %s", strerror(errno));
    fcntl(sigpipe_fd[0], F_SETFL, O_NONBLOCK);
    fcntl(sigpipe_fd[1], F_SETFL, O_NONBLOCK);
    fcntl(sigpipe_fd[0], F_SETFD, FD_CLOEXEC);
    fcntl(sigpipe_fd[1], F_SETFD, FD_CLOEXEC);
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGUSR2, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

int sim_wait(const struct sim_pty *p, int timeout_ms, void (*card_event)(int insert),
             short *revents)
{
    struct pollfd pf[2] = { { .fd = p->mfd, .events = POLLIN }, { .fd = sigpipe_fd[0], .events = POLLIN } };
    int r;
    *revents = 0;
    do
        r = poll(pf, 2, timeout_ms);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        sim_die("poll: %s", strerror(errno));
    if (pf[1].revents & POLLIN) {
        char ev[16];
        ssize_t k = read(sigpipe_fd[0], ev, sizeof ev);
        ssize_t j;
        for (j = 0; j < k; j++) {
            if (ev[j] == 'T') {
                sim_logf("terminating");
                cleanup();
                exit(0);
            }
            card_event(ev[j] == 'I');
        }
    }
    *revents = pf[0].revents;
    return r;
}
