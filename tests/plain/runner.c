/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The runner behind criterion/criterion.h's stand-in: runs every registered test in
 * this process, suite init then test init, test fini then suite fini, with an alarm as
 * the timeout. Any failed assertion ends the run with status 1. */
#include "criterion/criterion.h"

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <unistd.h>

static struct plain_test *tests;
static struct plain_suite *suites;
static const struct plain_test *current;
static jmp_buf skip_jump;

void plain_register_test(struct plain_test *t)
{
	/* Appended, so tests run in file order. */
	struct plain_test **pp = &tests;
	while (*pp)
		pp = &(*pp)->next;
	*pp = t;
}

void plain_register_suite(struct plain_suite *s)
{
	s->next = suites;
	suites = s;
}

void plain_fail(const char *file, int line, const char *cond, const char *fmt, ...)
{
	fprintf(stderr, "[FAIL] %s::%s: %s:%d: %s", current ? current->suite : "?",
	        current ? current->name : "?", file, line, cond);
	if (fmt && *fmt) {
		va_list ap;
		va_start(ap, fmt);
		fputs(": ", stderr);
		vfprintf(stderr, fmt, ap);
		va_end(ap);
	}
	fputc('\n', stderr);
	exit(1);
}

void plain_skip(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "[SKIP] %s::%s: ", current->suite, current->name);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	longjmp(skip_jump, 1);
}

void plain_log(const char *level, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "[%s] ", level);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

static void on_alarm(int sig)
{
	(void)sig;
	static const char msg[] = "[FAIL] timeout\n";
	(void)!write(2, msg, sizeof(msg) - 1);
	_exit(2);
}

/* Runs the test's body; false when it skipped itself. */
static bool run_body(const struct plain_test *t)
{
	if (setjmp(skip_jump))
		return false;
	t->fn();
	return true;
}

int main(int argc, char **argv)
{
	const char *only = argc > 1 ? argv[1] : NULL;
	int n = 0, skipped = 0;
	signal(SIGALRM, on_alarm);
	for (const struct plain_test *t = tests; t; t = t->next) {
		if (only && strcmp(only, t->name) != 0)
			continue;
		const struct plain_suite *s = suites;
		while (s && strcmp(s->name, t->suite) != 0)
			s = s->next;
		double timeout = t->opts.timeout ? t->opts.timeout : s && s->opts.timeout ? s->opts.timeout : 60;
		/* Slow instrumentation (valgrind) stretches every run. */
		if (getenv("CALAIS_TEST_UNDER_VALGRIND"))
			timeout *= 20;
		current = t;
		fprintf(stderr, "[RUN ] %s::%s\n", t->suite, t->name);
		alarm((unsigned)timeout + 1);
		if (s && s->opts.init)
			s->opts.init();
		if (t->opts.init)
			t->opts.init();
		if (!run_body(t))
			skipped++, n--;
		if (t->opts.fini)
			t->opts.fini();
		if (s && s->opts.fini)
			s->opts.fini();
		alarm(0);
		n++;
	}
	fprintf(stderr, "[====] %d tests passed\n", n);
	if (skipped)
		fprintf(stderr, "[====] %d tests skipped\n", skipped);
	return 0;
}
