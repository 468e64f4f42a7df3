/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Portable threads, locks, condition variables and monotonic time: the same static
 * inline names on POSIX (pthreads) and Win32 (SRWLOCK, CONDITION_VARIABLE), so the core
 * never includes <pthread.h> or <windows.h> itself. */
#ifndef CALAIS_PLATFORM_THREADS_H
#define CALAIS_PLATFORM_THREADS_H

#include <stdint.h>
#include <stdbool.h>
#include <assert.h>
#include <stdatomic.h>

#if defined(_WIN32)
#define CALAIS_PLATFORM_WINDOWS 1
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN /* no <winscard.h>: the PC/SC declarations are ours */
#endif
#include <windows.h>

typedef SRWLOCK calais__mutex_t;
typedef CONDITION_VARIABLE calais__cond_t;
typedef HANDLE calais__thread_t;
#define CALAIS__MUTEX_INIT SRWLOCK_INIT

static inline void calais__mutex_init(calais__mutex_t *m) { InitializeSRWLock(m); }
static inline void calais__mutex_destroy(calais__mutex_t *m) { (void)m; }
static inline void calais__mutex_lock_raw(calais__mutex_t *m) { AcquireSRWLockExclusive(m); }
static inline void calais__mutex_unlock_raw(calais__mutex_t *m) { ReleaseSRWLockExclusive(m); }
static inline void calais__cond_init(calais__cond_t *c) { InitializeConditionVariable(c); }
static inline void calais__cond_destroy(calais__cond_t *c) { (void)c; }
static inline void calais__cond_wait(calais__cond_t *c, calais__mutex_t *m)
{
	SleepConditionVariableSRW(c, m, INFINITE, 0);
}
static inline void calais__cond_signal(calais__cond_t *c) { WakeConditionVariable(c); }
static inline void calais__cond_broadcast(calais__cond_t *c) { WakeAllConditionVariable(c); }

/* Monotonic milliseconds. */
static inline uint64_t calais__now_ms(void) { return GetTickCount64(); }
static inline uint64_t calais__now_us(void)
{
	LARGE_INTEGER f, c;
	QueryPerformanceFrequency(&f);
	QueryPerformanceCounter(&c);
	return (uint64_t)(c.QuadPart / f.QuadPart) * 1000000u +
	       (uint64_t)(c.QuadPart % f.QuadPart) * 1000000u / (uint64_t)f.QuadPart;
}

/* Waits until the monotonic deadline (ms); returns false on timeout. */
static inline bool calais__cond_wait_until(calais__cond_t *c, calais__mutex_t *m,
                                           uint64_t deadline_ms)
{
	uint64_t now = calais__now_ms();
	if (now >= deadline_ms)
		return false;
	uint64_t d = deadline_ms - now;
	if (d > 0x7FFFFFFFu)
		d = 0x7FFFFFFFu;
	if (!SleepConditionVariableSRW(c, m, (DWORD)d, 0))
		return GetLastError() != ERROR_TIMEOUT;
	return true;
}

static inline void calais__sleep_us(uint32_t us) { Sleep((us + 999) / 1000); }
static inline unsigned long calais__tid(void) { return GetCurrentThreadId(); }

typedef struct {
	void *(*fn)(void *);
	void *arg;
} calais__thread_start_t;

static inline DWORD WINAPI calais__thread_trampoline(LPVOID p)
{
	calais__thread_start_t s = *(calais__thread_start_t *)p;
	HeapFree(GetProcessHeap(), 0, p);
	s.fn(s.arg);
	return 0;
}

static inline int calais__thread_create(calais__thread_t *t, void *(*fn)(void *), void *arg)
{
	calais__thread_start_t *s = HeapAlloc(GetProcessHeap(), 0, sizeof(*s));
	if (!s)
		return -1;
	s->fn = fn;
	s->arg = arg;
	*t = CreateThread(NULL, 0, calais__thread_trampoline, s, 0, NULL);
	if (!*t) {
		HeapFree(GetProcessHeap(), 0, s);
		return -1;
	}
	return 0;
}
static inline void calais__thread_join(calais__thread_t t)
{
	WaitForSingleObject(t, INFINITE);
	CloseHandle(t);
}

#else /* POSIX */
#define CALAIS_PLATFORM_POSIX 1
#include <pthread.h>
#include <time.h>
#include <errno.h>

typedef pthread_mutex_t calais__mutex_t;
typedef pthread_cond_t calais__cond_t;
typedef pthread_t calais__thread_t;
#define CALAIS__MUTEX_INIT PTHREAD_MUTEX_INITIALIZER

static inline void calais__mutex_init(calais__mutex_t *m)
{
	int rc = pthread_mutex_init(m, NULL);
	assert(rc == 0);
	(void)rc;
}
static inline void calais__mutex_destroy(calais__mutex_t *m) { pthread_mutex_destroy(m); }
static inline void calais__mutex_lock_raw(calais__mutex_t *m)
{
	int rc = pthread_mutex_lock(m);
	assert(rc == 0);
	(void)rc;
}
static inline void calais__mutex_unlock_raw(calais__mutex_t *m)
{
	int rc = pthread_mutex_unlock(m);
	assert(rc == 0);
	(void)rc;
}

/* Condition variables time out on CLOCK_MONOTONIC where the platform allows it, so a
 * wall-clock change never stretches or cuts a wait. */
static inline void calais__cond_init(calais__cond_t *c)
{
	pthread_condattr_t a;
	pthread_condattr_init(&a);
#if !defined(__APPLE__)
	pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
#endif
	int rc = pthread_cond_init(c, &a);
	assert(rc == 0);
	(void)rc;
	pthread_condattr_destroy(&a);
}
static inline void calais__cond_destroy(calais__cond_t *c) { pthread_cond_destroy(c); }
static inline void calais__cond_wait(calais__cond_t *c, calais__mutex_t *m)
{
	pthread_cond_wait(c, m);
}
static inline void calais__cond_signal(calais__cond_t *c) { pthread_cond_signal(c); }
static inline void calais__cond_broadcast(calais__cond_t *c) { pthread_cond_broadcast(c); }

static inline uint64_t calais__now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}
static inline uint64_t calais__now_ms(void) { return calais__now_us() / 1000u; }

/* Waits until the monotonic deadline (ms); returns false on timeout. */
static inline bool calais__cond_wait_until(calais__cond_t *c, calais__mutex_t *m,
                                           uint64_t deadline_ms)
{
	struct timespec ts;
#if defined(__APPLE__)
	uint64_t now = calais__now_ms();
	if (now >= deadline_ms)
		return false;
	uint64_t d = deadline_ms - now;
	ts.tv_sec = (time_t)(d / 1000u);
	ts.tv_nsec = (long)(d % 1000u) * 1000000L;
	return pthread_cond_timedwait_relative_np(c, m, &ts) != ETIMEDOUT;
#else
	ts.tv_sec = (time_t)(deadline_ms / 1000u);
	ts.tv_nsec = (long)(deadline_ms % 1000u) * 1000000L;
	return pthread_cond_timedwait(c, m, &ts) != ETIMEDOUT;
#endif
}

static inline void calais__sleep_us(uint32_t us)
{
	struct timespec ts = { .tv_sec = us / 1000000u, .tv_nsec = (long)(us % 1000000u) * 1000L };
	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}
static inline unsigned long calais__tid(void) { return (unsigned long)pthread_self(); }

static inline int calais__thread_create(calais__thread_t *t, void *(*fn)(void *), void *arg)
{
	return pthread_create(t, NULL, fn, arg) == 0 ? 0 : -1;
}
static inline void calais__thread_join(calais__thread_t t) { pthread_join(t, NULL); }
#endif

/*
 * Library locks are counted per thread, so the log path knows when a thread holds none:
 * a line logged under a lock is queued and delivered to the user's callback once the
 * thread has released its last lock (lib/log.c), never with a library lock held. The
 * _raw forms are for the log queue's own lock, which is not a library lock in that sense
 * (no callback runs under it).
 */
extern _Thread_local unsigned calais__locks_held;
extern atomic_int calais__log_queued; /* lines waiting for delivery */
void calais__log_deliver(void);

static inline void calais__mutex_lock(calais__mutex_t *m)
{
	calais__mutex_lock_raw(m);
	calais__locks_held++;
}
static inline void calais__mutex_unlock(calais__mutex_t *m)
{
	calais__locks_held--;
	calais__mutex_unlock_raw(m);
	if (!calais__locks_held && atomic_load_explicit(&calais__log_queued, memory_order_relaxed))
		calais__log_deliver();
}

#endif /* CALAIS_PLATFORM_THREADS_H */
