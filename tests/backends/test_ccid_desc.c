/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Every real CCID descriptor (773 interfaces of 691 readers, tests/data/ccid-descriptors.txt)
 * through the descriptor parser and the strategy choice, checked against what the
 * decoded dumps say, plus malformed descriptors. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "ccid.h"

static size_t unhex(const char *s, uint8_t *out, size_t cap)
{
	size_t n = 0;
	for (; s[0] && s[1] && n < cap; s += 2) {
		unsigned v;
		if (sscanf(s, "%2x", &v) != 1)
			break;
		out[n++] = (uint8_t)v;
	}
	return n;
}

Test(ccid_desc, every_real_reader)
{
	FILE *f = fopen(CALAIS_TEST_DATA "/ccid-descriptors.txt", "r");
	cr_assert_not_null(f);
	char line[512], name[128], hex[200], level;
	unsigned slots, host_pps, set_params, ifsd, pv, pm, t0, t1, iccd, count = 0;
	unsigned levels[4] = { 0 };
	while (fgets(line, sizeof(line), f)) {
		if (line[0] == '#')
			continue;
		int k = sscanf(line, "%127s %199s %c %u %u %u %u %u %u %u %u %u", name, hex, &level,
		               &slots, &host_pps, &set_params, &ifsd, &pv, &pm, &t0, &t1, &iccd);
		cr_assert_eq(k, 12, "bad vector line: %s", line);
		uint8_t b[64];
		size_t n = unhex(hex, b, sizeof(b));
		cr_assert_eq(n, 54, "%s", name);
		struct calais__ccid_desc d;
		cr_assert_eq(calais__ccid_desc_parse(b, n, &d), SCARD_S_SUCCESS, "%s", name);
		struct calais__ccid_strategy s;
		calais__ccid_strategy(&d, &s);
		static const char levels_c[] = "ctse";
		cr_assert_eq(levels_c[s.level], level, "%s: level %c, dump says %c", name, levels_c[s.level], level);
		cr_assert_eq(s.slots, slots, "%s", name);
		cr_assert_eq(s.host_pps, host_pps, "%s: host PPS", name);
		cr_assert_eq(s.set_parameters, set_params, "%s: SetParameters", name);
		cr_assert_eq(s.ifsd_request, ifsd, "%s: IFSD request", name);
		cr_assert_eq(s.pin_verify, pv, "%s", name);
		cr_assert_eq(s.pin_modify, pm, "%s", name);
		cr_assert_eq((d.protocols & 1) != 0, t0, "%s: T=0", name);
		cr_assert_eq((d.protocols & 2) != 0, t1, "%s: T=1", name);
		cr_assert_eq((d.features & CALAIS__CCID_ICCD_TOKEN) != 0, iccd, "%s: ICCD", name);
		levels[s.level]++;
		count++;
	}
	fclose(f);
	printf("CCID descriptors: %u (character %u, TPDU %u, short APDU %u, extended APDU %u)\n",
	       count, levels[0], levels[1], levels[2], levels[3]);
	cr_assert_geq(count, 770, "only %u descriptors", count);
}

Test(ccid_desc, malformed)
{
	uint8_t b[54] = { 0x36, 0x21 };
	struct calais__ccid_desc d;
	cr_assert_eq(calais__ccid_desc_parse(b, 53, &d), SCARD_E_READER_UNSUPPORTED);
	cr_assert_eq(calais__ccid_desc_parse(NULL, 54, &d), SCARD_E_READER_UNSUPPORTED);
	cr_assert_eq(calais__ccid_desc_parse(b, 54, &d), SCARD_E_READER_UNSUPPORTED, "no room for a command");
	b[44] = 0x0F, b[45] = 0x01; /* 271 bytes */
	cr_assert_eq(calais__ccid_desc_parse(b, 54, &d), SCARD_S_SUCCESS);
	b[1] = 0x24;
	cr_assert_eq(calais__ccid_desc_parse(b, 54, &d), SCARD_E_READER_UNSUPPORTED);
	b[1] = 0xFF; /* vendor type some readers use */
	cr_assert_eq(calais__ccid_desc_parse(b, 54, &d), SCARD_S_SUCCESS);
	b[0] = 0x20;
	cr_assert_eq(calais__ccid_desc_parse(b, 54, &d), SCARD_E_READER_UNSUPPORTED);
}
