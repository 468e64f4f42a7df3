/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* A small in-process stand-in for the part of Criterion's API our suites use. The same
 * test sources build against it into "plain" executables that run every test in one
 * process, one after the other: what ThreadSanitizer and valgrind need, since
 * Criterion's forking runner crashes under TSan and hides leaks of its test children
 * from valgrind. */
#ifndef CALAIS_PLAIN_CRITERION_H
#define CALAIS_PLAIN_CRITERION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

struct plain_opts {
	void (*init)(void);
	void (*fini)(void);
	double timeout;
	int signal;
};

struct plain_test {
	const char *suite, *name;
	void (*fn)(void);
	struct plain_opts opts;
	struct plain_test *next;
};

struct plain_suite {
	const char *name;
	struct plain_opts opts;
	struct plain_suite *next;
};

void plain_register_test(struct plain_test *t);
void plain_register_suite(struct plain_suite *s);
void plain_fail(const char *file, int line, const char *cond, const char *fmt, ...)
	__attribute__((noreturn, format(printf, 4, 5)));
void plain_log(const char *level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Ends the test as skipped (the runner counts it apart and goes on with the next). */
void plain_skip(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

#define Test(s, n, ...)                                                                  \
	static void s##_##n(void);                                                       \
	static struct plain_test plain_t_##s##_##n = { #s, #n, s##_##n, { __VA_ARGS__ }, NULL }; \
	__attribute__((constructor)) static void plain_reg_##s##_##n(void)              \
	{                                                                                \
		plain_register_test(&plain_t_##s##_##n);                                 \
	}                                                                                \
	static void s##_##n(void)

#define TestSuite(s, ...)                                                                \
	static struct plain_suite plain_s_##s = { #s, { __VA_ARGS__ }, NULL };           \
	__attribute__((constructor)) static void plain_regs_##s(void)                   \
	{                                                                                \
		plain_register_suite(&plain_s_##s);                                      \
	}

/* The message arguments are optional, as in Criterion: "" glues onto a format string
 * when one is given and stands alone when not. */
#define PLAIN_CHECK(cond, text, ...)                                                     \
	do {                                                                             \
		if (!(cond))                                                             \
			plain_fail(__FILE__, __LINE__, text, "" __VA_ARGS__);            \
	} while (0)

#define cr_assert(c, ...) PLAIN_CHECK((c), #c, __VA_ARGS__)
#define cr_assert_not(c, ...) PLAIN_CHECK(!(c), "!(" #c ")", __VA_ARGS__)
#define cr_assert_eq(a, b, ...) PLAIN_CHECK((a) == (b), #a " == " #b, __VA_ARGS__)
#define cr_assert_neq(a, b, ...) PLAIN_CHECK((a) != (b), #a " != " #b, __VA_ARGS__)
#define cr_assert_gt(a, b, ...) PLAIN_CHECK((a) > (b), #a " > " #b, __VA_ARGS__)
#define cr_assert_geq(a, b, ...) PLAIN_CHECK((a) >= (b), #a " >= " #b, __VA_ARGS__)
#define cr_assert_lt(a, b, ...) PLAIN_CHECK((a) < (b), #a " < " #b, __VA_ARGS__)
#define cr_assert_leq(a, b, ...) PLAIN_CHECK((a) <= (b), #a " <= " #b, __VA_ARGS__)
#define cr_assert_null(a, ...) PLAIN_CHECK((a) == NULL, #a " == NULL", __VA_ARGS__)
#define cr_assert_not_null(a, ...) PLAIN_CHECK((a) != NULL, #a " != NULL", __VA_ARGS__)
#define cr_assert_str_eq(a, b, ...) PLAIN_CHECK(strcmp((a), (b)) == 0, #a " streq " #b, __VA_ARGS__)
#define cr_assert_str_neq(a, b, ...) PLAIN_CHECK(strcmp((a), (b)) != 0, #a " strneq " #b, __VA_ARGS__)
#define cr_assert_arr_eq(a, b, n, ...) PLAIN_CHECK(memcmp((a), (b), (n)) == 0, #a " arreq " #b, __VA_ARGS__)
#define cr_assert_fail(...) plain_fail(__FILE__, __LINE__, "fail", "" __VA_ARGS__)
#define cr_skip_test(...) plain_skip(__VA_ARGS__)
#define cr_log_info(...) plain_log("info", __VA_ARGS__)
#define cr_log_error(...) plain_log("error", __VA_ARGS__)

#endif
