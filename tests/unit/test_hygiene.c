/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* What the library lets out and takes in: device text made safe before it reaches a
 * reader name or a log line, and a setuid or setgid program that ignores every CALAIS_*
 * variable (checked on a real setuid copy of env-probe when the suite runs as root). */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <calais/calais.h>
#include "calais-internal.h"

static void check_sanitised(const char *in, const char *want)
{
	char buf[64];
	snprintf(buf, sizeof(buf), "%s", in);
	calais__sanitise(buf, '?');
	cr_assert_str_eq(buf, want, "sanitise(\"%s\")", in);
}

Test(hygiene, sanitise_keeps_text_and_replaces_the_rest)
{
	check_sanitised("Gemalto PC Twin Reader", "Gemalto PC Twin Reader");
	check_sanitised("a\nb\rc\td", "a?b?c?d");
	check_sanitised("\x1b[2Jwiped", "?[2Jwiped");
	check_sanitised("del\x7f", "del?");
	check_sanitised("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x92\xb3", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x92\xb3");
	check_sanitised("c1 \xc2\x9b" "31m", "c1 ??31m");        /* CSI as a C1 control */
	check_sanitised("lone \x9b" "31m", "lone ?31m");          /* 8-bit CSI */
	check_sanitised("overlong \xc0\xaf", "overlong ??");
	check_sanitised("surrogate \xed\xa0\x80", "surrogate ???");
	check_sanitised("cut \xe2\x82", "cut ??");
	check_sanitised("past \xf4\x90\x80\x80", "past ????");
}

static char got[4][512];
static int n_got;

static void sink(enum calais_log_level level, const char *domain, const char *msg, void *u)
{
	if (strcmp(domain, "hygiene") == 0 && n_got < 4)
		snprintf(got[n_got++], sizeof(got[0]), "%s", msg);
}

Test(hygiene, a_device_string_cannot_forge_a_log_line)
{
	struct calais_config cfg;
	calais_config_init(&cfg);
	cfg.backends = "sim";
	cfg.log_level = CALAIS_LOG_DEBUG;
	cfg.log_level_set = true;
	cfg.log_cb = sink;
	cr_assert_eq(calais_start(&cfg), SCARD_S_SUCCESS);
	calais__log(CALAIS_LOG_WARNING, "hygiene", "reader \"%s\" says hello",
	            "Evil\n[core] forged: card removed\x1b]0;title\x07");
	calais_shutdown();
	cr_assert_eq(n_got, 1, "one line, not two");
	for (const char *p = got[0]; *p; p++)
		cr_assert((unsigned char)*p >= 0x20 && *p != 0x7f, "control 0x%02X in \"%s\"",
		          (unsigned char)*p, got[0]);
	cr_assert_str_eq(got[0], "reader \"Evil?[core] forged: card removed?]0;title?\" says hello");
}

/* Runs env-probe (at `path`) with CALAIS_LOG set; returns what it printed. (valgrind does
 * not trace it, so the setuid copy runs as such: tests/meson.build.) */
static void run_probe(const char *path, char *out, size_t cap)
{
	int fds[2];
	cr_assert_eq(pipe(fds), 0);
	pid_t pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		dup2(fds[1], 1);
		setenv("CALAIS_LOG", "debug", 1);
		execl(path, path, (char *)NULL);
		_exit(127);
	}
	close(fds[1]);
	ssize_t n = read(fds[0], out, cap - 1);
	out[n > 0 ? n : 0] = 0;
	close(fds[0]);
	int st;
	waitpid(pid, &st, 0);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s failed (status 0x%x)", path, st);
}

static char copy_dir[256];

static void remove_copy(void)
{
	char p[300];
	snprintf(p, sizeof(p), "%s/env-probe", copy_dir);
	unlink(p);
	rmdir(copy_dir);
}

Test(hygiene, a_setuid_program_ignores_the_environment, .fini = remove_copy)
{
	char out[128];
	/* The control: the plain program takes the variable. */
	run_probe(CALAIS_ENV_PROBE, out, sizeof(out));
	cr_assert_str_eq(out, "CALAIS_LOG=debug\n");

	if (geteuid() != 0)
		cr_skip_test("needs root to make a setuid copy of env-probe (running as uid %d)",
		             (int)geteuid());
	/* A copy owned by another user with the setuid bit, run by root: real and effective
	 * ids differ, as in any setuid program. Next to the build (not /tmp, which may be
	 * mounted nosuid). */
	snprintf(copy_dir, sizeof(copy_dir), "%s.XXXXXX", CALAIS_ENV_PROBE);
	cr_assert_not_null(mkdtemp(copy_dir), "mkdtemp: %s", strerror(errno));
	chmod(copy_dir, 0755);
	struct statvfs fs;
	if (statvfs(copy_dir, &fs) == 0 && (fs.f_flag & ST_NOSUID))
		cr_skip_test("the build directory is on a nosuid file system");
	char path[300];
	snprintf(path, sizeof(path), "%s/env-probe", copy_dir);
	int in = open(CALAIS_ENV_PROBE, O_RDONLY), outfd = open(path, O_WRONLY | O_CREAT, 0700);
	cr_assert(in >= 0 && outfd >= 0, "copy: %s", strerror(errno));
	char buf[65536];
	for (ssize_t n; (n = read(in, buf, sizeof(buf))) > 0;)
		cr_assert_eq(write(outfd, buf, (size_t)n), n);
	close(in);
	close(outfd);
	cr_assert_eq(chown(path, 65534, 65534), 0, "chown: %s", strerror(errno));
	cr_assert_eq(chmod(path, 04755), 0, "chmod: %s", strerror(errno));
	run_probe(path, out, sizeof(out));
	cr_assert_str_eq(out, "CALAIS_LOG ignored\n", "the setuid copy printed \"%s\"", out);
}
