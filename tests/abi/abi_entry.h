/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* One ABI fact (a value, size, offset, alignment or type class, named by what it
 * measures), and the two tables of them test_abi.c compares. */
#ifndef ABI_ENTRY_H
#define ABI_ENTRY_H

struct abi_entry {
	const char *name;
	unsigned long long value;
};

/* Each ends with { NULL, 0 }. */
extern const struct abi_entry abi_ours[], abi_theirs[];

/* PCSCLITE_VERSION_NUMBER on each side: reported, not compared, since a newer
 * pcsc-lite with the same ABI is no failure. */
extern const char abi_ours_version[], abi_theirs_version[];

#endif
