/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Our PC/SC headers against pcsc-lite's: every constant, size, signedness and offset
 * listed in abi_list.h must be equal; every mismatch is reported by name. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "abi_entry.h"

int abi_protos_checked(void);

Test(abi, tables_equal)
{
	size_t n = 0, bad = 0;
	for (; abi_ours[n].name; n++) {
		cr_assert(abi_theirs[n].name, "tables differ in length at %zu", n);
		cr_assert_str_eq(abi_ours[n].name, abi_theirs[n].name);
		/* A version string entry carries its text in the name. */
		if (abi_ours[n].value != abi_theirs[n].value) {
			bad++;
			cr_log_error("%s: ours 0x%llx, pcsc-lite 0x%llx", abi_ours[n].name,
			             abi_ours[n].value, abi_theirs[n].value);
		}
	}
	cr_assert_null(abi_theirs[n].name, "pcsc-lite table longer");
	cr_assert_gt(n, 250, "only %zu facts compared", n);
	cr_assert_eq(bad, 0, "%zu of %zu ABI facts differ", bad, n);
}

Test(abi, prototypes_compiled_against_pcsclite)
{
	cr_assert_eq(abi_protos_checked(), 18);
}
