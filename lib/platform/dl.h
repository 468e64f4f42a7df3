/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Run-time loading of shared libraries (the platform's PC/SC library for the
 * passthrough backend): dlopen on POSIX, LoadLibrary on Win32. */
#ifndef CALAIS_PLATFORM_DL_H
#define CALAIS_PLATFORM_DL_H

#if defined(_WIN32)
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN /* no <winscard.h>: the PC/SC declarations are ours */
#endif
#include <windows.h>

typedef HMODULE calais__dl_t;

static inline calais__dl_t calais__dl_open(const char *path)
{
	return LoadLibraryA(path);
}
static inline void *calais__dl_sym(calais__dl_t h, const char *name)
{
	return (void *)(uintptr_t)GetProcAddress(h, name);
}
static inline void calais__dl_close(calais__dl_t h)
{
	FreeLibrary(h);
}
static inline const char *calais__dl_error(void)
{
	return "LoadLibrary failed";
}
#else
#include <dlfcn.h>

typedef void *calais__dl_t;

/* RTLD_LOCAL: the library's SCard* symbols must never interpose on Calais' own. */
static inline calais__dl_t calais__dl_open(const char *path)
{
	return dlopen(path, RTLD_NOW | RTLD_LOCAL);
}
static inline void *calais__dl_sym(calais__dl_t h, const char *name)
{
	return dlsym(h, name);
}
static inline void calais__dl_close(calais__dl_t h)
{
	dlclose(h);
}
static inline const char *calais__dl_error(void)
{
	const char *e = dlerror();
	return e ? e : "unknown error";
}
#endif

#endif
