/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The backend interface through a third-party backend registered at run time: reader
 * reports, declared part 10 features, the core's presence polling for transports that
 * cannot push events, device loss, and registration errors. */
#include "helpers.h"

#include <stdatomic.h>
#include <string.h>

struct poll_priv {
	atomic_bool present;
	atomic_bool gone;
	atomic_int polls;
};

static calais_reader *the_reader;
static struct poll_priv *the_priv;

static const struct calais_feature features[] = {
	{ FEATURE_VERIFY_PIN_DIRECT, 0x42330006u },
	{ FEATURE_IFD_PIN_PROPERTIES, 0x4233000Au },
};

static LONG tb_init(calais_backend_instance *bi)
{
	struct calais_reader_desc d = {
		.name = "Polled Pinpad",
		.interface_name = "CCID Interface",
		.serial = "SN42",
		.slot = 1,
		.flags = CALAIS_READER_POLL_PRESENCE,
		.features = features,
		.n_features = 2,
	};
	LONG rv = calais_reader_new(bi, &d, &the_reader);
	if (rv != SCARD_S_SUCCESS)
		return rv;
	the_priv = calais_reader_priv(the_reader);
	return calais_reader_publish(the_reader, false);
}

static LONG tb_power_on(calais_reader *r, bool warm, uint8_t *atr, size_t *atr_len)
{
	struct poll_priv *p = calais_reader_priv(r);
	(void)warm;
	if (p->gone)
		return SCARD_E_READER_UNAVAILABLE;
	if (!p->present)
		return SCARD_E_NO_SMARTCARD;
	static const uint8_t a[] = { 0x3B, 0x00 };
	memcpy(atr, a, sizeof(a));
	*atr_len = sizeof(a);
	return SCARD_S_SUCCESS;
}

static LONG tb_transmit(calais_reader *r, uint32_t protocol, const uint8_t *tx, size_t tx_len,
                        uint8_t *rx, size_t *rx_len, uint32_t timeout_ms)
{
	struct poll_priv *p = calais_reader_priv(r);
	(void)protocol, (void)tx, (void)tx_len, (void)timeout_ms;
	if (p->gone)
		return SCARD_E_READER_UNAVAILABLE;
	rx[0] = 0x90, rx[1] = 0x00, *rx_len = 2;
	return SCARD_S_SUCCESS;
}

static LONG tb_slot_status(calais_reader *r, bool *present)
{
	struct poll_priv *p = calais_reader_priv(r);
	p->polls++;
	if (p->gone)
		return SCARD_E_READER_UNAVAILABLE;
	*present = p->present;
	return SCARD_S_SUCCESS;
}

static const struct calais_backend test_backend = {
	.abi_version = CALAIS_BACKEND_ABI_VERSION,
	.name = "polltest",
	.reader_priv_size = sizeof(struct poll_priv),
	.init = tb_init,
	.power_on = tb_power_on,
	.transmit = tb_transmit,
	.slot_status = tb_slot_status,
};

static void setup_backend(void)
{
	struct calais_config cfg;
	calais_config_init(&cfg);
	cfg.backends = "";
	cfg.poll_interval_ms = 20;
	assert_rv(calais_backend_register(&test_backend), SCARD_S_SUCCESS);
	assert_rv(calais_start(&cfg), SCARD_S_SUCCESS);
	assert_rv(SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &t_ctx), SCARD_S_SUCCESS);
	snprintf(t_name, sizeof(t_name), "%s", calais_reader_name(the_reader));
}

TestSuite(backend, .init = setup_backend, .fini = t_teardown, .timeout = 10);

Test(backend, name_built_from_the_description)
{
	cr_assert_str_eq(t_name, "Polled Pinpad [CCID Interface] (SN42) 00 01");
}

Test(backend, polling_finds_insertion_and_removal)
{
	t_wait_presence(t_name, false);
	the_priv->present = true;
	t_wait_presence(t_name, true);
	the_priv->present = false;
	t_wait_presence(t_name, false);
	cr_assert_geq(the_priv->polls, 2);
}

Test(backend, feature_request_from_declared_features)
{
	SCARDHANDLE h;
	DWORD p;
	assert_rv(SCardConnect(t_ctx, t_name, SCARD_SHARE_DIRECT, 0, &h, &p), SCARD_S_SUCCESS);
	BYTE out[32];
	DWORD ret = 0;
	assert_rv(SCardControl(h, CM_IOCTL_GET_FEATURE_REQUEST, NULL, 0, out, sizeof(out), &ret), SCARD_S_SUCCESS);
	static const BYTE want[] = { 0x06, 4, 0x42, 0x33, 0x00, 0x06, 0x0A, 4, 0x42, 0x33, 0x00, 0x0A };
	cr_assert_eq(ret, sizeof(want));
	cr_assert_arr_eq(out, want, sizeof(want));
	assert_rv(SCardControl(h, CM_IOCTL_GET_FEATURE_REQUEST, NULL, 0, out, 6, &ret), SCARD_E_INSUFFICIENT_BUFFER);
	cr_assert_eq(ret, 12);
	/* No control member: every other code is unsupported. */
	assert_rv(SCardControl(h, 0x42330006u, NULL, 0, out, sizeof(out), &ret), SCARD_E_UNSUPPORTED_FEATURE);
	/* Without get_attrib, only the core's attributes exist. */
	DWORD len = sizeof(out);
	assert_rv(SCardGetAttrib(h, SCARD_ATTR_VENDOR_IFD_SERIAL_NO, out, &len), SCARD_E_UNSUPPORTED_FEATURE);
	assert_rv(SCardDisconnect(h, SCARD_LEAVE_CARD), SCARD_S_SUCCESS);
}

Test(backend, device_loss_found_by_polling)
{
	the_priv->present = true;
	t_wait_presence(t_name, true);
	SCARDHANDLE h = t_connect(SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0);
	SCARD_READERSTATE pnp = { .szReader = "\\\\?PnP?\\Notification" };
	assert_rv(SCardGetStatusChange(t_ctx, 0, &pnp, 1), SCARD_E_TIMEOUT);
	pnp.dwCurrentState = pnp.dwEventState;
	the_priv->gone = true;
	assert_rv(SCardGetStatusChange(t_ctx, 2000, &pnp, 1), SCARD_S_SUCCESS);
	assert_rv(SCardStatus(h, NULL, NULL, NULL, NULL, NULL, NULL), SCARD_E_READER_UNAVAILABLE);
	assert_rv(SCardDisconnect(h, SCARD_LEAVE_CARD), SCARD_S_SUCCESS);
	DWORD len = 0;
	assert_rv(SCardListReaders(t_ctx, NULL, NULL, &len), SCARD_E_NO_READERS_AVAILABLE);
}

Test(backend, registration_errors)
{
	struct calais_backend bad = test_backend;
	assert_rv(calais_backend_register(NULL), SCARD_E_INVALID_PARAMETER);
	bad.init = NULL;
	assert_rv(calais_backend_register(&bad), SCARD_E_INVALID_PARAMETER);
	bad = test_backend;
	bad.abi_version = CALAIS_BACKEND_ABI_VERSION + 1;
	assert_rv(calais_backend_register(&bad), SCARD_E_INVALID_PARAMETER);
	bad = test_backend;
	assert_rv(calais_backend_register(&bad), SCARD_E_DUPLICATE_READER);
	bad.name = "sim";
	assert_rv(calais_backend_register(&bad), SCARD_E_DUPLICATE_READER);
	struct calais_reader_desc d = { .name = NULL };
	calais_reader *r;
	assert_rv(calais_reader_new(calais_reader_backend(the_reader), &d, &r), SCARD_E_INVALID_PARAMETER);
}

/* A name kept from another resource manager (the passthrough backend's) is used as it
 * is, and never given twice: a reader whose built name would be the same is numbered
 * past it, and a kept name already taken is numbered like any other. */
Test(backend, kept_names_never_collide)
{
	calais_backend_instance *bi = calais_reader_backend(the_reader);
	struct calais_reader_desc kept = { .name = "Polled Pinpad [CCID Interface] (SN42) 00 00",
	                                   .flags = CALAIS_READER_KEEP_NAME };
	calais_reader *r1, *r2, *r3;
	assert_rv(calais_reader_new(bi, &kept, &r1), SCARD_S_SUCCESS);
	assert_rv(calais_reader_publish(r1, false), SCARD_S_SUCCESS);
	cr_assert_str_eq(calais_reader_name(r1), "Polled Pinpad [CCID Interface] (SN42) 00 00");

	struct calais_reader_desc built = { .name = "Polled Pinpad", .interface_name = "CCID Interface",
	                                    .serial = "SN42", .slot = 0 };
	assert_rv(calais_reader_new(bi, &built, &r2), SCARD_S_SUCCESS);
	assert_rv(calais_reader_publish(r2, false), SCARD_S_SUCCESS);
	cr_assert_str_eq(calais_reader_name(r2), "Polled Pinpad [CCID Interface] (SN42) 01 00");

	assert_rv(calais_reader_new(bi, &kept, &r3), SCARD_S_SUCCESS);
	assert_rv(calais_reader_publish(r3, false), SCARD_S_SUCCESS);
	cr_assert_str_eq(calais_reader_name(r3),
	                 "Polled Pinpad [CCID Interface] (SN42) 00 00 01 00");
	calais_reader_remove(r1);
	calais_reader_remove(r2);
	calais_reader_remove(r3);
}

/* A thread waiting on the reader list while a backend reports on a reader it has not
 * published yet (as the USB backend does when a device comes back): nobody can watch
 * that reader, nothing may look at its name (it has none yet: this once crashed). */
static LONG wait_for_a_new_reader(void *arg)
{
	SCARDCONTEXT c;
	LONG rv = SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &c);
	if (rv != SCARD_S_SUCCESS)
		return rv;
	SCARD_READERSTATE pnp = { .szReader = "\\\\?PnP?\\Notification",
		                  .dwCurrentState = SCARD_STATE_UNAWARE };
	rv = SCardGetStatusChange(c, 0, &pnp, 1); /* learns the current state */
	if (rv == SCARD_S_SUCCESS || rv == SCARD_E_TIMEOUT) {
		pnp.dwCurrentState = pnp.dwEventState & ~(DWORD)SCARD_STATE_CHANGED;
		atomic_store((atomic_bool *)arg, true);
		rv = SCardGetStatusChange(c, 5000, &pnp, 1);
	}
	SCardReleaseContext(c);
	return rv;
}

Test(backend, events_on_an_unpublished_reader_with_waiters)
{
	atomic_bool waiting = false;
	t_thread *t = t_spawn(wait_for_a_new_reader, &waiting);
	while (!atomic_load(&waiting) && !t_done(t))
		t_sleep_ms(1);
	cr_assert(!t_done(t), "the waiter could not start: 0x%lX", (unsigned long)t_join(t));
	t_sleep_ms(50); /* inside the second SCardGetStatusChange() */
	calais_backend_instance *bi = calais_reader_backend(the_reader);
	struct calais_reader_desc d = { .name = "Late Reader" };
	calais_reader *r;
	assert_rv(calais_reader_new(bi, &d, &r), SCARD_S_SUCCESS);
	calais_reader_set_unavailable(r, SCARD_E_READER_UNAVAILABLE);
	calais_reader_set_unavailable(r, SCARD_S_SUCCESS);
	cr_assert(!t_done(t), "no reader-list change yet");
	assert_rv(calais_reader_publish(r, false), SCARD_S_SUCCESS);
	assert_rv(t_join(t), SCARD_S_SUCCESS);
	calais_reader_remove(r);
}
