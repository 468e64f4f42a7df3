/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Deferred reader jobs and the watch on exchanges: the scheduler thread and the runner
 * threads that run each reader's jobs.
 *
 * Isolation. Power-up at insertion, presence polls (and the one probe of a reader whose
 * backend cannot tell at publish), idle power-down, the idle-transaction
 * timeout, the end of a backend's hold and the close of a removed reader each need the
 * reader's I/O lock, and each may block for as long as the device lets it (a mute card,
 * another thread's long Transmit or PIN entry on the same reader). So no thread that
 * serves several readers ever takes an I/O lock:
 * - the scheduler (one thread) only reads state under mgr.lock: it finds the readers with
 *   a job due and hands them to runners, sleeps until the next deadline, watches the
 *   exchange limit of every open I/O section, and calls backends' cancel(), which never
 *   blocks;
 * - a runner serves one reader at a time: it runs that reader's due jobs one after the
 *   other, each in an I/O section, then takes the next reader from mgr.run_queue or
 *   waits RUNNER_IDLE_MS for one and leaves. A reader is served by one runner at a time,
 *   so its jobs keep their order; a stuck reader holds one runner. The pool grows when
 *   work waits: up to RUNNERS_AT_ONCE runners start at once, and past them one more each
 *   RUNNER_GROW_MS while a reader waits in the queue with no runner free. So a burst of
 *   quick jobs (a thousand cards at start-up) is served by a few threads, and a reader
 *   behind stuck ones waits RUNNER_GROW_MS at most for a runner of its own.
 * Lock order: a reader's io_lock, then its cancel_lock, then backend locks, then
 * mgr.lock. Runners and the scheduler hold a reference on a reader while they use it.
 */
#include "calais-internal.h"

#include <stdlib.h>

#define M (&calais__mgr)

/* An idle runner leaves after this long without work. */
#define RUNNER_IDLE_MS 5000u
/* Runners started as soon as work waits; past them, one more per RUNNER_GROW_MS. */
#define RUNNERS_AT_ONCE 2u
#define RUNNER_GROW_MS 10u
/* While a cancelled section stays open, cancel() is sent again this often: a section may
 * make several backend calls, and each call clears the backend's cancel flag. */
#define CANCEL_RESEND_MS 100u

struct calais__runner {
	struct calais__runner *next;
	calais__thread_t thread;
	bool exited; /* mgr.lock: its thread function has returned or is about to */
};

enum job { JOB_NONE, JOB_CLOSE, JOB_POWER_UP, JOB_UNHOLD, JOB_POLL, JOB_POWER_DOWN,
           JOB_TX_TIMEOUT };

void calais__worker_kick(void)
{
	M->worker_wake = true;
	calais__cond_signal(&M->worker_cond);
}

/* The job due on r at `now`, JOB_NONE if none; *next gets the earliest later deadline.
 * Reads only. mgr.lock held. */
static enum job due(const struct calais_reader *r, uint64_t now, uint64_t *next)
{
	if (r->close_queued)
		return r->closed ? JOB_NONE : JOB_CLOSE;
	if (r->power_up_pending)
		return JOB_POWER_UP;
	if (r->probe_pending)
		return JOB_POLL;
	if (r->held && !r->tx_owner && r->sharing >= 0)
		return JOB_UNHOLD;
	enum job j = JOB_NONE;
	if (r->flags & CALAIS_READER_POLL_PRESENCE) {
		if (r->next_poll_ms <= now)
			j = JOB_POLL;
		else if (r->next_poll_ms < *next)
			*next = r->next_poll_ms;
	}
	if (j == JOB_NONE && r->power_down_at_ms) {
		if (r->power_down_at_ms <= now)
			j = JOB_POWER_DOWN;
		else if (r->power_down_at_ms < *next)
			*next = r->power_down_at_ms;
	}
	if (j == JOB_NONE && r->tx_owner && M->cfg.transaction_timeout_ms) {
		uint64_t at = r->tx_last_use_ms + M->cfg.transaction_timeout_ms;
		if (at <= now)
			j = JOB_TX_TIMEOUT;
		else if (at < *next)
			*next = at;
	}
	return j;
}

/* Runs one job on r in an I/O section; mgr.lock held on entry and exit, dropped inside.
 * Each job clears what made it due, so a runner never runs one twice for one cause. */
static void run_job(struct calais_reader *r, enum job job)
{
	calais__reader_io_begin(r);
	bool ok = !r->closed && !M->stopping && (job == JOB_CLOSE || !r->removed);
	bool still = false, probe = r->probe_pending;
	uint32_t gen = r->card_gen;
	uint64_t now = calais__now_ms();
	switch (job) {
	case JOB_CLOSE:
		still = !r->closed;
		break;
	case JOB_POWER_UP:
		still = r->power_up_pending;
		break;
	case JOB_POLL:
		/* A probe stays pending until its answer is in: start-up waits for it. */
		if (!probe)
			r->next_poll_ms = now + M->cfg.poll_interval_ms;
		still = true;
		break;
	case JOB_POWER_DOWN:
		still = r->n_handles == 0 && r->card == CALAIS__CARD_POWERED && r->power_down_at_ms &&
		        r->power_down_at_ms <= now;
		if (!still && r->power_down_at_ms <= now)
			r->power_down_at_ms = 0;
		break;
	case JOB_TX_TIMEOUT:
		still = r->tx_owner && M->cfg.transaction_timeout_ms &&
		        r->tx_last_use_ms + M->cfg.transaction_timeout_ms <= now;
		if (still) {
			/* Windows' rule: an idle transaction ends with a card reset, so a
			 * program that forgot EndTransaction cannot lock others out. */
			calais__warn("\"%s\": transaction idle for %u ms: ended, card reset",
			             r->name, M->cfg.transaction_timeout_ms);
			calais__reader_release_tx(r);
			calais__reader_flag_handles(r, NULL, CALAIS__EV_RESET);
		}
		break;
	case JOB_UNHOLD:
		still = r->held && !r->tx_owner && r->sharing >= 0;
		if (still)
			r->held = false;
		break;
	default:
		break;
	}
	if (!(ok && still)) {
		if (job == JOB_POWER_UP)
			r->power_up_pending = false; /* removed or stopping: nobody will see it */
		if (job == JOB_POLL)
			r->probe_pending = false;
		calais__reader_io_end(r);
		return;
	}
	/* close() tears down what cancel() would touch: the section is left alone. */
	if (job == JOB_CLOSE)
		r->closing = true;
	calais__mutex_unlock(&M->lock);
	switch (job) {
	case JOB_CLOSE:
		if (r->bi->be->close)
			r->bi->be->close(r);
		break;
	case JOB_POWER_UP:
		calais__reader_power_up(r);
		break;
	case JOB_POWER_DOWN:
		calais__dbg("\"%s\": idle card powered down", r->name);
		calais__reader_power_down(r);
		break;
	case JOB_TX_TIMEOUT:
		calais__reader_reset(r, false);
		break;
	case JOB_UNHOLD: {
		LONG rv = calais__reader_hold_fn(r)(r, false);
		if (rv != SCARD_S_SUCCESS)
			calais__dbg("\"%s\": ending the hold: %s", r->name, pcsc_stringify_error(rv));
		break;
	}
	case JOB_POLL: {
		bool present = false;
		LONG rv = r->bi->be->slot_status ? r->bi->be->slot_status(r, &present)
		                                 : SCARD_E_UNSUPPORTED_FEATURE;
		/* An event reported meanwhile (the interrupt pipe) is newer than this answer. */
		calais__mutex_lock(&M->lock);
		bool stale = r->card_gen != gen;
		calais__mutex_unlock(&M->lock);
		if (rv == SCARD_S_SUCCESS && !stale)
			calais_reader_card_event(r, present);
		else if (rv == SCARD_S_SUCCESS)
			calais__dbg("\"%s\": slot status set aside: an event came meanwhile", r->name);
		else if (rv == SCARD_E_READER_UNAVAILABLE)
			calais__reader_lost(r);
		else
			calais__dbg("\"%s\": slot status failed: %s", r->name, pcsc_stringify_error(rv));
		break;
	}
	default:
		break;
	}
	calais__mutex_lock(&M->lock);
	if (job == JOB_POLL && probe) {
		/* The answer is in (a card found is INSERTED now, waiting for its ATR). */
		r->probe_pending = false;
		calais__cond_broadcast(&M->state_cond); /* start-up waits for the probes */
	}
	if (job == JOB_CLOSE) {
		r->closed = true;
		r->closing = false;
		for (struct calais_reader **pp = &M->dead_readers; *pp; pp = &(*pp)->dead_next)
			if (*pp == r) {
				*pp = r->dead_next;
				break;
			}
		r->refs--; /* the registry's, held since publish; the runner's keeps it alive */
	}
	calais__reader_io_end(r);
}

/* Serves r until it has no job due. mgr.lock held; r holds the queue's reference. */
static void serve(struct calais_reader *r)
{
	r->job_queued = false;
	r->job_active = true;
	while (!M->stopping) {
		uint64_t next = UINT64_MAX;
		enum job j = due(r, calais__now_ms(), &next);
		if (j == JOB_NONE)
			break;
		run_job(r, j);
	}
	r->job_active = false;
	calais__worker_kick(); /* r's deadlines may have moved */
	calais__reader_unref(r);
}

static void *runner_main(void *arg)
{
	struct calais__runner *me = arg;
	calais__mutex_lock(&M->lock);
	for (;;) {
		if (M->run_queue) {
			struct calais_reader *r = M->run_queue;
			M->run_queue = r->run_next;
			if (!M->run_queue)
				M->run_tail = &M->run_queue;
			r->run_next = NULL;
			serve(r);
			continue;
		}
		if (M->stopping)
			break;
		M->n_idle++;
		bool woken = calais__cond_wait_until(&M->runner_cond, &M->lock,
		                                     calais__now_ms() + RUNNER_IDLE_MS);
		M->n_idle--;
		if (M->n_woken)
			M->n_woken--;
		if (!woken && !M->run_queue)
			break;
	}
	me->exited = true;
	M->n_runners--;
	calais__cond_broadcast(&M->drain_cond);
	calais__mutex_unlock(&M->lock);
	return NULL;
}

/* Starts one more runner. mgr.lock held. None starts once the manager is stopping:
 * calais__jobs_stop() has then seen the last runner leave, or will, and joins those only
 * (the scheduler, dropping mgr.lock in a pass, may dispatch after that). */
static void spawn_runner(void)
{
	if (M->stopping)
		return;
	struct calais__runner *run = calloc(1, sizeof(*run));
	if (run && calais__thread_create(&run->thread, runner_main, run) == 0) {
		run->next = M->runners;
		M->runners = run;
		M->n_runners++;
		M->last_spawn_ms = calais__now_ms();
		return;
	}
	free(run);
	/* The queue waits for the next runner that frees up, or the next try. */
	calais__err("cannot start a thread for readers' jobs");
}

/* Queues r for a runner: an idle one is woken, or (while the pool is small) one is
 * started; schedule() grows the pool past that. mgr.lock held. */
static void dispatch(struct calais_reader *r)
{
	r->job_queued = true;
	r->refs++;
	r->run_next = NULL;
	r->queued_ms = calais__now_ms();
	*M->run_tail = r;
	M->run_tail = &r->run_next;
	if (M->n_idle > M->n_woken) {
		M->n_woken++;
		calais__cond_signal(&M->runner_cond);
	} else if (M->n_runners < RUNNERS_AT_ONCE) {
		spawn_runner();
	}
}

/* Work waits with no runner free: one more runner each RUNNER_GROW_MS. Returns the time
 * to look again, or UINT64_MAX. mgr.lock held. */
static uint64_t grow_pool(uint64_t now)
{
	if (!M->run_queue || M->n_idle > M->n_woken)
		return UINT64_MAX;
	uint64_t since = M->run_queue->queued_ms > M->last_spawn_ms ? M->run_queue->queued_ms
	                                                              : M->last_spawn_ms;
	if (since + RUNNER_GROW_MS <= now) {
		spawn_runner();
		return now + RUNNER_GROW_MS;
	}
	return since + RUNNER_GROW_MS;
}

/* Joins the runners that have left. mgr.lock held, dropped inside. */
static void reap_runners(void)
{
	struct calais__runner *gone = NULL;
	for (struct calais__runner **pp = &M->runners; *pp;) {
		struct calais__runner *run = *pp;
		if (run->exited) {
			*pp = run->next;
			run->next = gone;
			gone = run;
		} else {
			pp = &run->next;
		}
	}
	if (!gone)
		return;
	calais__mutex_unlock(&M->lock);
	while (gone) {
		struct calais__runner *run = gone;
		gone = run->next;
		calais__thread_join(run->thread);
		free(run);
	}
	calais__mutex_lock(&M->lock);
}

void calais__jobs_send_cancel(struct calais_reader *r)
{
	uint32_t seq = r->io_seq;
	r->cancel_sent_ms = calais__now_ms();
	void (*cancel)(calais_reader *) = r->bi->be->cancel;
	if (!cancel)
		return;
	r->refs++;
	calais__mutex_unlock(&M->lock);
	/* cancel_lock: the section cannot end and the next one begin in between, so the
	 * cancel reaches the section it was meant for or none. */
	calais__mutex_lock(&r->cancel_lock);
	calais__mutex_lock(&M->lock);
	bool still = r->io_busy && r->io_seq == seq;
	calais__mutex_unlock(&M->lock);
	if (still)
		cancel(r);
	calais__mutex_unlock(&r->cancel_lock);
	calais__mutex_lock(&M->lock);
	calais__reader_unref(r);
}

/* The exchange limit and pending cancels of r's open section; returns true when a
 * cancel is to be sent now. mgr.lock held. */
static bool watch_io(struct calais_reader *r, uint64_t now, uint64_t *next)
{
	if (!r->io_busy)
		return false;
	if (r->io_deadline_ms && !r->cancel_reason) {
		if (r->io_deadline_ms <= now) {
			calais__warn("\"%s\": exchange limit of %u ms reached: the call is ended",
			             r->name ? r->name : "?", M->cfg.exchange_timeout_ms);
			r->cancel_reason = CALAIS__CANCEL_TIMEOUT;
			r->cancel_sent_ms = 0;
		} else if (r->io_deadline_ms < *next) {
			*next = r->io_deadline_ms;
		}
	}
	if (!r->cancel_reason || !r->bi->be->cancel)
		return false;
	uint64_t at = r->cancel_sent_ms ? r->cancel_sent_ms + CANCEL_RESEND_MS : now;
	if (at <= now)
		return true;
	if (at < *next)
		*next = at;
	return false;
}

/* Every reader with I/O to watch: the published ones, then the removed ones waiting for
 * their close (mgr.dead_readers). for (r = first_reader(); r; r = next_reader(r)), with
 * mgr.lock held throughout. */
static struct calais_reader *first_reader(void)
{
	return M->readers ? M->readers : M->dead_readers;
}

static struct calais_reader *next_reader(struct calais_reader *r)
{
	if (r->removed)
		return r->dead_next;
	return r->next ? r->next : M->dead_readers;
}

/* One pass: dispatches due jobs, sends cancels, returns the next deadline. mgr.lock held,
 * dropped inside. */
static uint64_t schedule(void)
{
	for (;;) {
		/* First, as it drops mgr.lock: the scan below then sees every open section. */
		reap_runners();
		uint64_t now = calais__now_ms(), next = UINT64_MAX;
		struct calais_reader *to_cancel = NULL;
		for (struct calais_reader *r = first_reader(); r; r = next_reader(r)) {
			if (!to_cancel && watch_io(r, now, &next))
				to_cancel = r;
			if (!r->job_queued && !r->job_active && due(r, now, &next) != JOB_NONE)
				dispatch(r);
		}
		if (to_cancel) {
			calais__jobs_send_cancel(to_cancel);
			continue;
		}
		uint64_t grow = grow_pool(now);
		return grow < next ? grow : next;
	}
}

static void *scheduler_main(void *arg)
{
	(void)arg;
	calais__mutex_lock(&M->lock);
	while (!M->stopping) {
		M->worker_wake = false;
		uint64_t next = schedule();
		if (M->stopping)
			break;
		if (M->worker_wake)
			continue;
		M->sched_next_ms = next;
		if (next == UINT64_MAX)
			calais__cond_wait(&M->worker_cond, &M->lock);
		else
			calais__cond_wait_until(&M->worker_cond, &M->lock, next);
		M->sched_next_ms = 0; /* awake: every new deadline is seen by the next pass */
	}
	calais__mutex_unlock(&M->lock);
	return NULL;
}

LONG calais__jobs_start(void)
{
	calais__cond_init(&M->runner_cond);
	M->run_queue = NULL;
	M->run_tail = &M->run_queue;
	M->runners = NULL;
	M->n_runners = M->n_idle = M->n_woken = 0;
	M->last_spawn_ms = 0;
	M->worker_wake = false;
	M->sched_next_ms = 0;
	if (calais__thread_create(&M->worker, scheduler_main, NULL) != 0) {
		calais__cond_destroy(&M->runner_cond);
		return SCARD_E_NO_MEMORY;
	}
	M->worker_running = true;
	return SCARD_S_SUCCESS;
}

void calais__jobs_stop(void)
{
	calais__cond_broadcast(&M->worker_cond);
	calais__cond_broadcast(&M->runner_cond);
	/* Every open section ends: application calls and runners' jobs alike. Sent again
	 * while sections stay open, as the scheduler would. */
	for (;;) {
		for (struct calais_reader *r = first_reader(); r; r = next_reader(r))
			calais__reader_cancel_io(r, CALAIS__CANCEL_SHUTDOWN);
		struct calais_reader *to_cancel = NULL;
		uint64_t now = calais__now_ms(), next = UINT64_MAX;
		for (struct calais_reader *r = first_reader(); r && !to_cancel; r = next_reader(r))
			if (watch_io(r, now, &next))
				to_cancel = r;
		if (to_cancel) {
			calais__jobs_send_cancel(to_cancel);
			continue;
		}
		if (!M->active_calls && !M->n_runners)
			break;
		uint64_t until = now + CANCEL_RESEND_MS;
		calais__cond_wait_until(&M->drain_cond, &M->lock, next < until ? next : until);
	}
	bool join = M->worker_running;
	M->worker_running = false;
	calais__mutex_unlock(&M->lock);
	if (join)
		calais__thread_join(M->worker);
	calais__mutex_lock(&M->lock);
	reap_runners();
	/* Readers queued but never served: the queue's references. */
	while (M->run_queue) {
		struct calais_reader *r = M->run_queue;
		M->run_queue = r->run_next;
		r->job_queued = false;
		calais__reader_unref(r);
	}
	M->run_tail = &M->run_queue;
	calais__cond_destroy(&M->runner_cond);
}

void calais__jobs_forget(void)
{
	/* The parent's threads do not exist here: their records are dropped, not joined
	 * (their memory stays reachable from the parent's abandoned state, as a copy). */
	M->runners = NULL;
	M->run_queue = NULL;
	M->run_tail = &M->run_queue;
	M->n_runners = M->n_idle = M->n_woken = 0;
	M->worker_running = false;
}
