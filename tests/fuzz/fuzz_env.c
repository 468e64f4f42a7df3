/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* libFuzzer target: the parsers of every CALAIS_* variable. The first input byte picks
 * the variable, the rest is its value (up to a NUL): CALAIS_SERIAL_READERS (the list,
 * each declaration, the model or the Phoenix options), CALAIS_VPCD with
 * CALAIS_VPCD_READERS (after a NUL in the value), CALAIS_BACKENDS, CALAIS_LOG,
 * CALAIS_CCID_ESCAPE, and the durations (CALAIS_EXCHANGE_TIMEOUT_MS, CALAIS_POLL_MS,
 * CALAIS_POWER_DOWN_MS, CALAIS_TRANSACTION_TIMEOUT_MS: one parser). CALAIS_PCSC_LIBRARY
 * is a path handed to the loader as it is: nothing parses it. */
#include <stdlib.h>

#include "calais-internal.h"
#include "../../backends/serial/serial-int.h"
#include "../../backends/vpcd/vpcd-int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void serial_readers(const char *list)
{
	/* As serial_init() splits it. */
	char *copy = strdup(list), *save = NULL;
	if (!copy)
		return;
	for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		while (*tok == ' ')
			tok++;
		if (!*tok)
			continue;
		char dev[256];
		const char *proto, *extra;
		if (calais__serial_parse_spec(tok, dev, sizeof(dev), &proto, &extra) != SCARD_S_SUCCESS)
			continue;
		if (!proto || !*dev || strlen(dev) >= sizeof(dev))
			__builtin_trap();
		if (extra && (extra < dev || extra >= dev + sizeof(dev)))
			__builtin_trap();
		if (strcmp(proto, "gemtwin") != 0) {
			struct calais__sreader *s = calloc(1, sizeof(*s));
			if (!s)
				break;
			snprintf(s->path, sizeof(s->path), "%s", dev);
			if (calais__phoenix_config(s, strcmp(proto, "smartmouse") == 0, extra) ==
			            SCARD_S_SUCCESS &&
			    (s->ph.clock_khz < 1000 || s->ph.clock_khz > 20000))
				__builtin_trap();
			free(s);
		}
	}
	free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	static bool quiet;
	if (!quiet) {
		calais_log_set(CALAIS_LOG_NONE, NULL, NULL);
		quiet = true;
	}
	char v[1024], *second;
	size_t n = size - 1 < sizeof(v) - 2 ? size - 1 : sizeof(v) - 2;
	memcpy(v, data + 1, n);
	v[n] = v[n + 1] = 0;
	second = v + strlen(v) + 1;
	switch (data[0] % 8) {
	case 0:
		serial_readers(v);
		break;
	case 1: {
		char host[64];
		unsigned long port = 0;
		unsigned slots = 0;
		if (calais__vpcd_parse(v, second, host, sizeof(host), &port, &slots) == SCARD_S_SUCCESS &&
		    (!memchr(host, 0, sizeof(host)) || port == 0 || port + slots - 1 > 65535 ||
		     slots < 1 || slots > 16))
			__builtin_trap();
		break;
	}
	case 2: {
		const struct calais_backend *want[16];
		size_t k = 0;
		LONG rv = calais__parse_backends(v, data[0] & 8, want, 16, &k);
		if (rv == SCARD_S_SUCCESS && k > 16)
			__builtin_trap();
		for (size_t i = 0; rv == SCARD_S_SUCCESS && i < k; i++)
			for (size_t j = 0; j < i; j++)
				if (want[i] == want[j] || !want[i])
					__builtin_trap();
		break;
	}
	case 3: {
		int level = calais__log_level_parse(v);
		if (level < -1 || level > CALAIS_LOG_DEBUG)
			__builtin_trap();
		break;
	}
	case 4:
		(void)calais__parse_flag(v);
		break;
	default: {
		static const char *const ms[] = { "CALAIS_EXCHANGE_TIMEOUT_MS", "CALAIS_POLL_MS",
		                                  "CALAIS_POWER_DOWN_MS" };
		uint32_t x = 7;
		LONG rv = calais__parse_ms(ms[data[0] % 8 - 5], v, &x);
		if (rv != SCARD_S_SUCCESS && x != 7)
			__builtin_trap();
		break;
	}
	}
	return 0;
}
