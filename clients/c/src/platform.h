/* The only OS-specific code of the library: threads, locks, clocks, process
 * facts and randomness, for POSIX and (#ifdef _WIN32) Windows. */
#ifndef COLLECTORD_PLATFORM_H
#define COLLECTORD_PLATFORM_H

#include <stddef.h>
#include <stdint.h>

#ifdef _WIN32
#  include <windows.h>
typedef CRITICAL_SECTION cd_mutex;
typedef CONDITION_VARIABLE cd_cond;
typedef HANDLE cd_thread;
#  if defined(_MSC_VER)
#    define CD_THREAD_LOCAL __declspec(thread)
#  else /* MinGW's GCC ignores __declspec(thread): a shared buffer */
#    define CD_THREAD_LOCAL __thread
#  endif
#else
#  include <pthread.h>
typedef pthread_mutex_t cd_mutex;
typedef pthread_cond_t cd_cond;
typedef pthread_t cd_thread;
#  define CD_THREAD_LOCAL __thread
#endif

int cd_mutex_init(cd_mutex *mutex);
void cd_mutex_destroy(cd_mutex *mutex);
void cd_mutex_lock(cd_mutex *mutex);
void cd_mutex_unlock(cd_mutex *mutex);

/* Condition variables wait on the monotonic clock. */
int cd_cond_init(cd_cond *cond);
void cd_cond_destroy(cd_cond *cond);
void cd_cond_broadcast(cd_cond *cond);
/* Wait until signalled or until `deadline_ms` (cd_now_ms) has passed. */
void cd_cond_wait_until(cd_cond *cond, cd_mutex *mutex, int64_t deadline_ms);

int cd_thread_start(cd_thread *thread, void (*run)(void *), void *argument);
void cd_thread_join(cd_thread thread);

/* Milliseconds on a monotonic clock. */
int64_t cd_now_ms(void);

/* `size` bytes from the OS's random source; 0 on success. */
int cd_random(unsigned char *bytes, size_t size);

int64_t cd_pid(void);
/* This process's command line into `buffer` (cut to fit), "" if unknown. */
void cd_program(char *buffer, size_t size);
/* The host name into `buffer`, "" if unknown. */
void cd_hostname(char *buffer, size_t size);

#endif
