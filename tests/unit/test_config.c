/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The parsers of untrusted configuration and service text, white-box (each is also a
 * fuzz target's): the CALAIS_* values, the PC/SC service's reader list, NotifySlotChange
 * and GET_DATA_RATES answers. The inputs are the kinds the fuzz targets found worth
 * keeping and those a reading of the code showed wrong before (an overlong or
 * unterminated service reader name, a signed duration). */
#include <criterion/criterion.h>
#include <string.h>

#include "calais-internal.h"
#include "../../backends/ccid/ccid.h"
#include "../../backends/pcsc/pcsc-int.h"
#include "../../backends/vpcd/vpcd-int.h"

Test(config, durations_take_digits_only)
{
	uint32_t v = 7;
	cr_assert_eq(calais__parse_ms("T", "30000", &v), SCARD_S_SUCCESS);
	cr_assert_eq(v, 30000u);
	cr_assert_eq(calais__parse_ms("T", "4294967295", &v), SCARD_S_SUCCESS);
	cr_assert_eq(v, 4294967295u);
	static const char *const bad[] = { "-1", " 5", "+5", "4294967296", "5ms", "0x10",
		                           "99999999999999999999999" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		v = 7;
		cr_assert_eq(calais__parse_ms("T", bad[i], &v), SCARD_E_INVALID_VALUE, "%s", bad[i]);
		cr_assert_eq(v, 7u, "%s changed the value", bad[i]);
	}
	cr_assert_eq(calais__parse_ms("T", "", &v), SCARD_S_SUCCESS);
	cr_assert_eq(calais__parse_ms("T", NULL, &v), SCARD_S_SUCCESS);
	cr_assert_eq(v, 7u);
}

Test(config, flags_and_log_levels)
{
	cr_assert(!calais__parse_flag(NULL));
	cr_assert(!calais__parse_flag(""));
	cr_assert(!calais__parse_flag("0"));
	cr_assert(calais__parse_flag("1"));
	cr_assert(calais__parse_flag("yes"));
	cr_assert_eq(calais__log_level_parse("DEBUG"), CALAIS_LOG_DEBUG);
	cr_assert_eq(calais__log_level_parse("warn"), CALAIS_LOG_WARNING);
	cr_assert_eq(calais__log_level_parse("0"), CALAIS_LOG_NONE);
	cr_assert_eq(calais__log_level_parse("5"), -1);
	cr_assert_eq(calais__log_level_parse("44"), -1);
	cr_assert_eq(calais__log_level_parse("verbose"), -1);
}

Test(config, backend_lists)
{
	const struct calais_backend *want[8];
	size_t n = 0;
	cr_assert_eq(calais__parse_backends("sim, SIM,,sim", false, want, 8, &n), SCARD_S_SUCCESS);
	cr_assert_eq(n, 1u, "a backend named three times is taken once");
	cr_assert_eq(calais__parse_backends("sim,nosuch", false, want, 8, &n), SCARD_E_INVALID_VALUE);
	cr_assert_eq(calais__parse_backends("nosuch, sim", true, want, 8, &n), SCARD_S_SUCCESS);
	cr_assert_eq(n, 1u, "from the environment an unknown name is skipped");
}

Test(config, vpcd_addresses)
{
	char host[64];
	unsigned long port;
	unsigned n;
	cr_assert_eq(calais__vpcd_parse("[::1]:40000", "4", host, sizeof(host), &port, &n),
	             SCARD_S_SUCCESS);
	cr_assert_str_eq(host, "::1");
	cr_assert_eq(port, 40000u);
	cr_assert_eq(n, 4u);
	cr_assert_eq(calais__vpcd_parse(NULL, "17", host, sizeof(host), &port, &n), SCARD_S_SUCCESS);
	cr_assert_eq(n, 2u, "a reader count beyond 16 keeps the default");
	cr_assert_eq(calais__vpcd_parse("h:1:2", NULL, host, sizeof(host), &port, &n),
	             SCARD_E_INVALID_VALUE);
	cr_assert_eq(calais__vpcd_parse(":65535", "2", host, sizeof(host), &port, &n),
	             SCARD_E_INVALID_VALUE, "port 65536 for the second reader");
	cr_assert_eq(calais__vpcd_parse("[::1", NULL, host, sizeof(host), &port, &n),
	             SCARD_E_INVALID_VALUE);
	char longhost[100];
	memset(longhost, 'a', sizeof(longhost) - 1);
	longhost[sizeof(longhost) - 1] = 0;
	cr_assert_eq(calais__vpcd_parse(longhost, NULL, host, sizeof(host), &port, &n),
	             SCARD_E_INVALID_VALUE);
}

Test(config, service_reader_names)
{
	const char *names[4];
	static const char two[] = "A 00 00\0B 01 00\0";
	cr_assert_eq(calais__pcsc_names(two, sizeof(two), names, 4), 2u);
	cr_assert_str_eq(names[0], "A 00 00");
	cr_assert_str_eq(names[1], "B 01 00");
	/* The last name's NUL lies past the length the service reported. */
	static const char cut[] = "A 00 00\0B 01 00";
	cr_assert_eq(calais__pcsc_names(cut, sizeof(cut) - 1, names, 4), 1u);
	static const char dup[] = "A 00 00\0A 00 00\0";
	cr_assert_eq(calais__pcsc_names(dup, sizeof(dup), names, 4), 1u);
	/* A name that cannot be stored whole would be a new reader at each listing. */
	char longname[MAX_READERNAME + 10];
	memset(longname, 'R', MAX_READERNAME);
	memcpy(longname + MAX_READERNAME, "\0S\0\0", 4);
	cr_assert_eq(calais__pcsc_names(longname, MAX_READERNAME + 4, names, 4), 1u);
	cr_assert_str_eq(names[0], "S");
	static const char five[] = "a\0b\0c\0d\0e\0";
	cr_assert_eq(calais__pcsc_names(five, sizeof(five), names, 4), 4u);
	cr_assert_eq(calais__pcsc_names("", 0, names, 4), 0u);
}

Test(config, notify_slot_change_and_data_rates)
{
	uint8_t bits[8];
	static const uint8_t notify[] = { 0x50, 0xB3 };
	cr_assert_eq(calais__ccid_intr_parse("t", notify, sizeof(notify), 8, bits), 4u);
	cr_assert_eq(bits[0], 3);
	cr_assert_eq(bits[1], 0);
	cr_assert_eq(bits[2], 3);
	cr_assert_eq(bits[3], 2);
	cr_assert_eq(calais__ccid_intr_parse("t", notify, sizeof(notify), 2, bits), 2u);
	static const uint8_t hw[] = { 0x51, 0x00, 0x01, 0xFB };
	cr_assert_eq(calais__ccid_intr_parse("t", hw, sizeof(hw), 8, bits), 0u);
	uint32_t r[4];
	size_t n;
	static const uint8_t rates[] = { 0x80, 0x25, 0, 0, 0x00, 0x4B, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0 };
	cr_assert_eq(calais__ccid_rates_parse("t", rates, sizeof(rates), r, 4, &n), SCARD_S_SUCCESS);
	cr_assert_eq(n, 2u, "the list ends at its first 0");
	cr_assert_eq(r[0], 9600u);
	cr_assert_eq(r[1], 19200u);
	cr_assert_eq(calais__ccid_rates_parse("t", rates, 6, r, 4, &n), SCARD_E_INVALID_VALUE);
	cr_assert_eq(n, 0u);
}
