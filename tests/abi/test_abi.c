/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Our PC/SC headers against pcsc-lite's: every fact in abi_list.h (values, sizes,
 * alignments, offsets, types) must be equal, and every mismatch is reported by name.
 * With ABI_TEST_STRINGIFY (link Calais and libdl), also our pcsc_stringify_error()
 * against libpcsclite.so.1's, loaded with dlopen so the two do not collide. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "abi_entry.h"

int abi_protos_checked(void);

Test(abi, tables_equal)
{
	size_t n = 0, bad = 0;

	cr_log_info("PCSCLITE_VERSION_NUMBER: ours \"%s\", installed pcsc-lite \"%s\"",
	            abi_ours_version, abi_theirs_version);
	for (; abi_ours[n].name && abi_theirs[n].name; n++) {
		/* Both tables come from one list, so a name mismatch is a build problem. */
		cr_assert_str_eq(abi_ours[n].name, abi_theirs[n].name, "tables out of step at %zu",
		                 n);
		if (abi_ours[n].value != abi_theirs[n].value) {
			bad++;
			cr_log_error("%s: ours %llu (0x%llx), pcsc-lite %llu (0x%llx)",
			             abi_ours[n].name, abi_ours[n].value, abi_ours[n].value,
			             abi_theirs[n].value, abi_theirs[n].value);
		}
	}
	cr_assert(!abi_ours[n].name && !abi_theirs[n].name, "tables differ in length");
	cr_assert_gt(n, 600, "only %zu facts compared", n);
	cr_assert_eq(bad, 0, "%zu of %zu ABI facts differ (see above)", bad, n);
}

Test(abi, prototypes_compiled_against_pcsclite)
{
	cr_assert_eq(abi_protos_checked(), 18);
}

#ifdef ABI_TEST_STRINGIFY
#include <dlfcn.h>

#include <winscard.h>

/* Programs print and sometimes parse these strings, so they must be pcsc-lite's to the
 * byte: its texts, and "Unknown error: 0x%08lX" for everything else. */
Test(abi, stringify_error_matches_libpcsclite)
{
	void *lib = dlopen("libpcsclite.so.1", RTLD_NOW | RTLD_LOCAL);
	if (!lib)
		cr_skip_test("libpcsclite.so.1 not loadable: %s", dlerror());
	const char *(*theirs)(LONG);
	*(void **)&theirs = dlsym(lib, "pcsc_stringify_error");
	cr_assert_not_null(theirs, "no pcsc_stringify_error in libpcsclite.so.1");

	static const LONG extra[] = { 0, 1, -1, 0x12345, 0x7FFFFFFF, (LONG)0x80100000,
	                              (LONG)0x801000FF, (LONG)0xC0000000 };
	size_t bad = 0, n = 0;
	char want[128];
	for (long i = -1; i < 0x100 + (long)(sizeof(extra) / sizeof(extra[0])); i++, n++) {
		LONG rv = i < 0     ? SCARD_S_SUCCESS
		          : i < 0x100 ? (LONG)(0x80100000 + i)
		                      : extra[i - 0x100];
		snprintf(want, sizeof(want), "%s", theirs(rv));
		const char *got = pcsc_stringify_error(rv);
		if (strcmp(got, want) != 0) {
			bad++;
			cr_log_error("0x%08lX: ours \"%s\", pcsc-lite \"%s\"", (unsigned long)rv, got,
			             want);
		}
	}
	dlclose(lib);
	cr_assert_eq(bad, 0, "%zu of %zu texts differ (see above)", bad, n);
}
#endif
