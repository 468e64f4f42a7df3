/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Contexts: establish, release, validity, cancel, free memory, error strings, and the
 * manager's life cycle (lazy start, shutdown, restart). */
#include "helpers.h"

#include <stdlib.h>
#include <string.h>

TestSuite(context, .init = t_setup, .fini = t_teardown, .timeout = 10);

Test(context, establish_checks_arguments)
{
	SCARDCONTEXT c = 1;
	assert_rv(SCardEstablishContext(SCARD_SCOPE_USER, NULL, NULL, NULL), SCARD_E_INVALID_PARAMETER);
	assert_rv(SCardEstablishContext(4, NULL, NULL, &c), SCARD_E_INVALID_VALUE);
	assert_rv(SCardEstablishContext(0x1234, NULL, NULL, &c), SCARD_E_INVALID_VALUE);
	for (DWORD scope = SCARD_SCOPE_USER; scope <= SCARD_SCOPE_GLOBAL; scope++) {
		assert_rv(SCardEstablishContext(scope, NULL, NULL, &c), SCARD_S_SUCCESS);
		cr_assert_neq(c, 0);
		cr_assert_leq((unsigned long)c, 0xFFFFFFFFul, "context values are 32-bit");
		assert_rv(SCardIsValidContext(c), SCARD_S_SUCCESS);
		assert_rv(SCardReleaseContext(c), SCARD_S_SUCCESS);
	}
}

Test(context, contexts_are_distinct)
{
	SCARDCONTEXT c[32];
	for (int i = 0; i < 32; i++) {
		assert_rv(SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &c[i]), SCARD_S_SUCCESS);
		for (int j = 0; j < i; j++)
			cr_assert_neq(c[i], c[j]);
	}
	for (int i = 0; i < 32; i++)
		assert_rv(SCardReleaseContext(c[i]), SCARD_S_SUCCESS);
}

Test(context, released_and_forged_contexts_are_invalid)
{
	SCARDCONTEXT c;
	assert_rv(SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &c), SCARD_S_SUCCESS);
	assert_rv(SCardReleaseContext(c), SCARD_S_SUCCESS);
	assert_rv(SCardIsValidContext(c), SCARD_E_INVALID_HANDLE);
	assert_rv(SCardReleaseContext(c), SCARD_E_INVALID_HANDLE);
	SCARDCONTEXT forged[] = { 0, 0x12345, (SCARDCONTEXT)0x100000000ll, -1, t_ctx + 1 };
	for (size_t i = 0; i < sizeof(forged) / sizeof(forged[0]); i++) {
		if (forged[i] == t_ctx)
			continue;
		DWORD len = 0;
		SCARD_READERSTATE rs = { .szReader = t_name };
		SCARDHANDLE h;
		DWORD p;
		assert_rv(SCardIsValidContext(forged[i]), SCARD_E_INVALID_HANDLE);
		assert_rv(SCardReleaseContext(forged[i]), SCARD_E_INVALID_HANDLE);
		assert_rv(SCardListReaders(forged[i], NULL, NULL, &len), SCARD_E_INVALID_HANDLE);
		assert_rv(SCardListReaderGroups(forged[i], NULL, &len), SCARD_E_INVALID_HANDLE);
		assert_rv(SCardGetStatusChange(forged[i], 0, &rs, 1), SCARD_E_INVALID_HANDLE);
		assert_rv(SCardConnect(forged[i], t_name, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h, &p),
		          SCARD_E_INVALID_HANDLE);
		assert_rv(SCardCancel(forged[i]), SCARD_E_INVALID_HANDLE);
		assert_rv(SCardFreeMemory(forged[i], NULL), SCARD_E_INVALID_HANDLE);
	}
}

Test(context, release_disconnects_handles)
{
	SCARDCONTEXT c;
	SCARDHANDLE h;
	DWORD p;
	assert_rv(SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &c), SCARD_S_SUCCESS);
	assert_rv(SCardConnect(c, t_name, SCARD_SHARE_EXCLUSIVE, SCARD_PROTOCOL_T1, &h, &p), SCARD_S_SUCCESS);
	assert_rv(SCardReleaseContext(c), SCARD_S_SUCCESS);
	assert_rv(SCardStatus(h, NULL, NULL, NULL, NULL, NULL, NULL), SCARD_E_INVALID_HANDLE);
	/* The exclusive connection went with its context. */
	SCARDHANDLE h2 = t_connect(SCARD_SHARE_EXCLUSIVE, SCARD_PROTOCOL_T1);
	assert_rv(SCardDisconnect(h2, SCARD_LEAVE_CARD), SCARD_S_SUCCESS);
}

Test(context, release_with_open_transaction_resets_the_card)
{
	SCARDCONTEXT c;
	SCARDHANDLE h;
	DWORD p;
	SCARDHANDLE other = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	assert_rv(SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &c), SCARD_S_SUCCESS);
	assert_rv(SCardConnect(c, t_name, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h, &p), SCARD_S_SUCCESS);
	assert_rv(SCardBeginTransaction(h), SCARD_S_SUCCESS);
	assert_rv(SCardReleaseContext(c), SCARD_S_SUCCESS);
	/* The lock is gone and the other handle learns of the reset. */
	assert_rv(SCardBeginTransaction(other), SCARD_W_RESET_CARD);
	assert_rv(SCardReconnect(other, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, SCARD_LEAVE_CARD, &p),
	          SCARD_S_SUCCESS);
	assert_rv(SCardBeginTransaction(other), SCARD_S_SUCCESS);
	assert_rv(SCardEndTransaction(other, SCARD_LEAVE_CARD), SCARD_S_SUCCESS);
}

Test(context, release_keeps_another_contexts_transaction)
{
	SCARDCONTEXT c;
	SCARDHANDLE h;
	DWORD p;
	SCARDHANDLE owner = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	assert_rv(SCardBeginTransaction(owner), SCARD_S_SUCCESS);
	assert_rv(SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &c), SCARD_S_SUCCESS);
	assert_rv(SCardConnect(c, t_name, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h, &p), SCARD_S_SUCCESS);
	assert_rv(SCardReleaseContext(c), SCARD_S_SUCCESS);
	/* Still ours: ending it works, and ending it again does not. */
	assert_rv(SCardEndTransaction(owner, SCARD_LEAVE_CARD), SCARD_S_SUCCESS);
	assert_rv(SCardEndTransaction(owner, SCARD_LEAVE_CARD), SCARD_E_NOT_TRANSACTED);
}

Test(context, cancel_without_waiter_is_a_no_op)
{
	SCARD_READERSTATE rs = { .szReader = t_name, .dwCurrentState = SCARD_STATE_UNAWARE };
	assert_rv(SCardGetStatusChange(t_ctx, 0, &rs, 1), SCARD_S_SUCCESS);
	rs.dwCurrentState = rs.dwEventState;
	assert_rv(SCardCancel(t_ctx), SCARD_S_SUCCESS);
	/* The next wait is not cancelled by the earlier call. */
	assert_rv(SCardGetStatusChange(t_ctx, 50, &rs, 1), SCARD_E_TIMEOUT);
}

Test(context, free_memory_frees_autoallocated_buffers)
{
	char *list = NULL;
	DWORD len = SCARD_AUTOALLOCATE;
	assert_rv(SCardListReaders(t_ctx, NULL, (LPSTR)&list, &len), SCARD_S_SUCCESS);
	cr_assert_not_null(list);
	cr_assert_str_eq(list, t_name);
	assert_rv(SCardFreeMemory(t_ctx, list), SCARD_S_SUCCESS);
	assert_rv(SCardFreeMemory(t_ctx, NULL), SCARD_S_SUCCESS);
}

Test(context, stringify_error_names_every_code)
{
	static const LONG codes[] = {
		SCARD_S_SUCCESS, SCARD_F_INTERNAL_ERROR, SCARD_E_CANCELLED, SCARD_E_INVALID_HANDLE,
		SCARD_E_INVALID_PARAMETER, SCARD_E_NO_MEMORY, SCARD_E_INSUFFICIENT_BUFFER,
		SCARD_E_UNKNOWN_READER, SCARD_E_TIMEOUT, SCARD_E_SHARING_VIOLATION,
		SCARD_E_NO_SMARTCARD, SCARD_E_PROTO_MISMATCH, SCARD_E_INVALID_VALUE,
		SCARD_F_COMM_ERROR, SCARD_E_NOT_TRANSACTED, SCARD_E_READER_UNAVAILABLE,
		SCARD_E_NO_SERVICE, SCARD_E_UNSUPPORTED_FEATURE, SCARD_E_NO_READERS_AVAILABLE,
		SCARD_W_UNRESPONSIVE_CARD, SCARD_W_UNPOWERED_CARD, SCARD_W_RESET_CARD,
		SCARD_W_REMOVED_CARD,
	};
	char seen[sizeof(codes) / sizeof(codes[0])][128];
	for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		const char *s = pcsc_stringify_error(codes[i]);
		cr_assert_not_null(s);
		cr_assert_gt(strlen(s), 5);
		cr_assert_neq(strncmp(s, "Unknown error", 13), 0, "0x%08lX has no text", (unsigned long)codes[i]);
		snprintf(seen[i], sizeof(seen[i]), "%s", s);
		for (size_t j = 0; j < i; j++)
			cr_assert_str_neq(seen[i], seen[j]);
	}
	cr_assert_str_eq(pcsc_stringify_error(SCARD_S_SUCCESS), "Command successful.");
	cr_assert_str_eq(pcsc_stringify_error(0x12345), "Unknown error: 0x00012345");
	cr_assert_str_eq(pcsc_stringify_error((LONG)0x80100070), "Unknown error: 0x80100070");
}

Test(context, shutdown_invalidates_and_restarts)
{
	SCARDCONTEXT old = t_ctx;
	SCARDHANDLE h = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	calais_shutdown();
	cr_assert_not(calais_is_running());
	assert_rv(SCardIsValidContext(old), SCARD_E_INVALID_HANDLE);
	assert_rv(SCardStatus(h, NULL, NULL, NULL, NULL, NULL, NULL), SCARD_E_INVALID_HANDLE);
	/* The next context starts the manager again, lazily, from the environment. */
	SCARDCONTEXT c;
	assert_rv(SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &c), SCARD_S_SUCCESS);
	cr_assert(calais_is_running());
	assert_rv(SCardReleaseContext(c), SCARD_S_SUCCESS);
}

Test(context, start_rejects_unknown_backend_and_double_start)
{
	struct calais_config cfg;
	calais_config_init(&cfg);
	assert_rv(calais_start(&cfg), SCARD_E_INVALID_VALUE); /* already running */
	calais_shutdown();
	cfg.backends = "sim,nosuchbackend";
	assert_rv(calais_start(&cfg), SCARD_E_INVALID_VALUE);
	cr_assert_not(calais_is_running());
	cfg.backends = "sim";
	assert_rv(calais_start(&cfg), SCARD_S_SUCCESS);
	cr_assert_eq(calais_version(), CALAIS_VERSION);
	cr_assert_str_eq(calais_version_str(), CALAIS_VERSION_STR);
}

static LONG shutdown_waiter(void *arg)
{
	(void)arg;
	SCARD_READERSTATE rs = { .szReader = t_name, .dwCurrentState = SCARD_STATE_PRESENT };
	rs.dwCurrentState = SCARD_STATE_UNAWARE;
	LONG rv = SCardGetStatusChange(t_ctx, 0, &rs, 1);
	if (rv != SCARD_S_SUCCESS)
		return rv;
	rs.dwCurrentState = rs.dwEventState;
	return SCardGetStatusChange(t_ctx, INFINITE, &rs, 1);
}

Test(context, shutdown_wakes_waiters)
{
	t_thread *t = t_spawn(shutdown_waiter, NULL);
	t_sleep_ms(100);
	cr_assert_not(t_done(t));
	calais_shutdown();
	assert_rv(t_join(t), SCARD_E_CANCELLED);
}
