/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* One fact about the PC/SC ABI: a constant's value, a size, a signedness or an offset. */
#ifndef ABI_ENTRY_H
#define ABI_ENTRY_H
struct abi_entry {
	const char *name;
	unsigned long long value;
};
extern const struct abi_entry abi_ours[], abi_theirs[];
#endif
