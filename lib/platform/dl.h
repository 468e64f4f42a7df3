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
#include <stdbool.h>
#include <string.h>

typedef HMODULE calais__dl_t;

/* A bare name (winscard.dll) is loaded from the system directory only, never from the
 * program's or the current directory, where a planted copy would be found first; a path
 * the program configured is loaded as given, its dependencies from its own directory and
 * the system's. */
static inline calais__dl_t calais__dl_open(const char *path)
{
	bool bare = !strchr(path, '\\') && !strchr(path, '/') && !strchr(path, ':');
	return LoadLibraryExA(path, NULL,
	                      bare ? LOAD_LIBRARY_SEARCH_SYSTEM32
	                           : LOAD_LIBRARY_SEARCH_DLL_LOAD_DIR | LOAD_LIBRARY_SEARCH_SYSTEM32);
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
