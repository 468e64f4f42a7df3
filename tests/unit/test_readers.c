/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Reader listing and naming: multi-strings, size queries, SCARD_AUTOALLOCATE, groups,
 * pcsc-lite's "<name> XX YY" scheme, and no fixed reader limit. */
#include "helpers.h"

#include <stdlib.h>
#include <string.h>

TestSuite(readers, .init = t_setup, .fini = t_teardown, .timeout = 20);

Test(readers, size_query_then_fill)
{
	DWORD len = 0;
	assert_rv(SCardListReaders(t_ctx, NULL, NULL, &len), SCARD_S_SUCCESS);
	cr_assert_eq(len, strlen(t_name) + 2, "one name, its NUL and the final NUL");
	char buf[256];
	memset(buf, 'x', sizeof(buf));
	DWORD len2 = sizeof(buf);
	assert_rv(SCardListReaders(t_ctx, NULL, buf, &len2), SCARD_S_SUCCESS);
	cr_assert_eq(len2, len);
	cr_assert_str_eq(buf, "Test Reader 00 00");
	cr_assert_eq(buf[len - 1], '\0');
	cr_assert_eq(buf[len], 'x', "nothing written past the list");
}

Test(readers, insufficient_buffer_reports_size)
{
	char buf[4];
	DWORD len = sizeof(buf);
	assert_rv(SCardListReaders(t_ctx, NULL, buf, &len), SCARD_E_INSUFFICIENT_BUFFER);
	cr_assert_eq(len, strlen(t_name) + 2);
	assert_rv(SCardListReaders(t_ctx, NULL, NULL, NULL), SCARD_E_INVALID_PARAMETER);
}

Test(readers, autoallocate)
{
	char *list = NULL;
	DWORD len = SCARD_AUTOALLOCATE;
	assert_rv(SCardListReaders(t_ctx, NULL, (LPSTR)&list, &len), SCARD_S_SUCCESS);
	cr_assert_eq(len, strlen(t_name) + 2);
	cr_assert_str_eq(list, t_name);
	assert_rv(SCardFreeMemory(t_ctx, list), SCARD_S_SUCCESS);
	len = SCARD_AUTOALLOCATE;
	assert_rv(SCardListReaders(t_ctx, NULL, NULL, &len), SCARD_E_INVALID_PARAMETER);
}

Test(readers, no_readers)
{
	assert_rv(calais_sim_reader_unplug(t_reader), SCARD_S_SUCCESS);
	DWORD len = 0;
	assert_rv(SCardListReaders(t_ctx, NULL, NULL, &len), SCARD_E_NO_READERS_AVAILABLE);
}

Test(readers, group_filter)
{
	DWORD len = 0;
	assert_rv(SCardListReaders(t_ctx, "SCard$DefaultReaders\0", NULL, &len), SCARD_S_SUCCESS);
	cr_assert_eq(len, strlen(t_name) + 2);
	assert_rv(SCardListReaders(t_ctx, "SCard$AllReaders\0", NULL, &len), SCARD_S_SUCCESS);
	assert_rv(SCardListReaders(t_ctx, "Kiosk$Nothing\0", NULL, &len), SCARD_E_NO_READERS_AVAILABLE);
	assert_rv(SCardListReaders(t_ctx, "Kiosk$Nothing\0SCard$DefaultReaders\0", NULL, &len),
	          SCARD_S_SUCCESS);
}

Test(readers, groups)
{
	char buf[64];
	DWORD len = 0;
	assert_rv(SCardListReaderGroups(t_ctx, NULL, &len), SCARD_S_SUCCESS);
	cr_assert_eq(len, sizeof("SCard$DefaultReaders") + 1);
	len = sizeof(buf);
	assert_rv(SCardListReaderGroups(t_ctx, buf, &len), SCARD_S_SUCCESS);
	cr_assert_str_eq(buf, "SCard$DefaultReaders");
	cr_assert_eq(buf[len - 1], '\0');
	len = 3;
	assert_rv(SCardListReaderGroups(t_ctx, buf, &len), SCARD_E_INSUFFICIENT_BUFFER);
	char *p = NULL;
	len = SCARD_AUTOALLOCATE;
	assert_rv(SCardListReaderGroups(t_ctx, (LPSTR)&p, &len), SCARD_S_SUCCESS);
	cr_assert_str_eq(p, "SCard$DefaultReaders");
	assert_rv(SCardFreeMemory(t_ctx, p), SCARD_S_SUCCESS);
	assert_rv(SCardListReaderGroups(t_ctx, NULL, NULL), SCARD_E_INVALID_PARAMETER);
}

Test(readers, identical_names_get_distinct_indexes)
{
	char a[MAX_READERNAME], b[MAX_READERNAME], c[MAX_READERNAME];
	calais_sim_reader *ra = t_add_reader("Same", a);
	t_add_reader("Same", b);
	cr_assert_str_eq(a, "Same 00 00");
	cr_assert_str_eq(b, "Same 01 00");
	/* The index is the first free one, reused after an unplug. */
	assert_rv(calais_sim_reader_unplug(ra), SCARD_S_SUCCESS);
	t_add_reader("Same", c);
	cr_assert_str_eq(c, "Same 00 00");
}

Test(readers, same_name_runs_out_of_indexes_with_an_error)
{
	/* XX has two hex digits: the 257th reader of one base name and slot is refused
	 * (it once looped forever, holding the manager lock). */
	for (int i = 0; i < 256; i++)
		t_add_reader("Twin", NULL);
	calais_sim_reader *r = NULL;
	assert_rv(calais_sim_reader_add("Twin", &r), SCARD_E_DUPLICATE_READER);
	cr_assert_null(r);
	char other[MAX_READERNAME];
	t_add_reader("Other", other);
	cr_assert_str_eq(other, "Other 00 00", "the manager still works");
	DWORD len = 0;
	assert_rv(SCardListReaders(t_ctx, NULL, NULL, &len), SCARD_S_SUCCESS);
}

Test(readers, long_and_hostile_names_are_bounded)
{
	char longname[400], name[MAX_READERNAME];
	memset(longname, 'A', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	t_add_reader(longname, name);
	cr_assert_eq(strlen(name), MAX_READERNAME - 1);
	cr_assert_str_eq(name + strlen(name) - 6, " 00 00");
	t_add_reader("Evil\nName\twith controls", name);
	cr_assert_str_eq(name, "Evil Name with controls 00 00");
}

Test(readers, many_readers)
{
	enum { N = 80 };
	for (int i = 0; i < N; i++) {
		char base[32];
		snprintf(base, sizeof(base), "Bulk %d", i);
		t_add_reader(base, NULL);
	}
	char *list = NULL;
	DWORD len = SCARD_AUTOALLOCATE;
	assert_rv(SCardListReaders(t_ctx, NULL, (LPSTR)&list, &len), SCARD_S_SUCCESS);
	int n = 0;
	for (const char *p = list; *p; p += strlen(p) + 1)
		n++;
	cr_assert_eq(n, N + 1);
	/* Arrival order. */
	cr_assert_str_eq(list, t_name);
	cr_assert_str_eq(list + strlen(list) + 1, "Bulk 0 00 00");
	assert_rv(SCardFreeMemory(t_ctx, list), SCARD_S_SUCCESS);

	/* Every one of them can be connected to after a card goes in. */
	char name[MAX_READERNAME];
	calais_sim_reader *last = t_add_reader("Last", name);
	assert_rv(calais_sim_card_insert(last, calais_sim_democard()), SCARD_S_SUCCESS);
	SCARDHANDLE h;
	DWORD p;
	assert_rv(SCardConnect(t_ctx, name, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h, &p), SCARD_S_SUCCESS);
	assert_rv(SCardDisconnect(h, SCARD_LEAVE_CARD), SCARD_S_SUCCESS);
}

Test(readers, default_sim_reader_from_configuration)
{
	calais_shutdown();
	struct calais_config cfg;
	calais_config_init(&cfg);
	cfg.backends = "sim";
	assert_rv(calais_start(&cfg), SCARD_S_SUCCESS);
	assert_rv(SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &t_ctx), SCARD_S_SUCCESS);
	char buf[128];
	DWORD len = sizeof(buf);
	assert_rv(SCardListReaders(t_ctx, NULL, buf, &len), SCARD_S_SUCCESS);
	cr_assert_str_eq(buf, "Calais Virtual Reader 00 00");
	snprintf(t_name, sizeof(t_name), "%s", buf);
	t_wait_presence(buf, true);
}
