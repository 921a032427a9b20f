/* OS calls, POSIX and Windows (see platform.h). */
#include "platform.h"

#include <string.h>

#ifdef _WIN32

#include <bcrypt.h>
#include <process.h>

int cd_mutex_init(cd_mutex *mutex) { InitializeCriticalSection(mutex); return 0; }
void cd_mutex_destroy(cd_mutex *mutex) { DeleteCriticalSection(mutex); }
void cd_mutex_lock(cd_mutex *mutex) { EnterCriticalSection(mutex); }
void cd_mutex_unlock(cd_mutex *mutex) { LeaveCriticalSection(mutex); }

int cd_cond_init(cd_cond *cond) { InitializeConditionVariable(cond); return 0; }
void cd_cond_destroy(cd_cond *cond) { (void)cond; }
void cd_cond_broadcast(cd_cond *cond) { WakeAllConditionVariable(cond); }

void cd_cond_wait_until(cd_cond *cond, cd_mutex *mutex, int64_t deadline_ms)
{
    int64_t left = deadline_ms - cd_now_ms();
    if (left <= 0) return;
    SleepConditionVariableCS(cond, mutex, (DWORD)left);
}

struct start { void (*run)(void *); void *argument; };

static unsigned __stdcall thread_main(void *raw)
{
    struct start start = *(struct start *)raw;
    HeapFree(GetProcessHeap(), 0, raw);
    start.run(start.argument);
    return 0;
}

int cd_thread_start(cd_thread *thread, void (*run)(void *), void *argument)
{
    struct start *start = HeapAlloc(GetProcessHeap(), 0, sizeof *start);
    if (start == NULL) return -1;
    start->run = run;
    start->argument = argument;
    *thread = (HANDLE)_beginthreadex(NULL, 0, thread_main, start, 0, NULL);
    if (*thread == 0) { HeapFree(GetProcessHeap(), 0, start); return -1; }
    return 0;
}

void cd_thread_join(cd_thread thread)
{
    WaitForSingleObject(thread, INFINITE);
    CloseHandle(thread);
}

int64_t cd_now_ms(void) { return (int64_t)GetTickCount64(); }

int cd_random(unsigned char *bytes, size_t size)
{
    NTSTATUS status = BCryptGenRandom(NULL, bytes, (ULONG)size, BCRYPT_USE_SYSTEM_PREFERRED_RNG);
    return status == 0 ? 0 : -1;
}

int64_t cd_pid(void) { return (int64_t)GetCurrentProcessId(); }

void cd_program(char *buffer, size_t size)
{
    if (size == 0) return;
    strncpy(buffer, GetCommandLineA(), size - 1);
    buffer[size - 1] = '\0';
}

void cd_hostname(char *buffer, size_t size)
{
    DWORD length = (DWORD)size;
    if (size == 0) return;
    if (!GetComputerNameA(buffer, &length)) buffer[0] = '\0';
}

#else

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int cd_mutex_init(cd_mutex *mutex) { return pthread_mutex_init(mutex, NULL) == 0 ? 0 : -1; }
void cd_mutex_destroy(cd_mutex *mutex) { pthread_mutex_destroy(mutex); }
void cd_mutex_lock(cd_mutex *mutex) { pthread_mutex_lock(mutex); }
void cd_mutex_unlock(cd_mutex *mutex) { pthread_mutex_unlock(mutex); }

int cd_cond_init(cd_cond *cond)
{
    pthread_condattr_t attributes;
    int failed;
    if (pthread_condattr_init(&attributes) != 0) return -1;
    failed = pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC) != 0
             || pthread_cond_init(cond, &attributes) != 0;
    pthread_condattr_destroy(&attributes);
    return failed ? -1 : 0;
}

void cd_cond_destroy(cd_cond *cond) { pthread_cond_destroy(cond); }
void cd_cond_broadcast(cd_cond *cond) { pthread_cond_broadcast(cond); }

void cd_cond_wait_until(cd_cond *cond, cd_mutex *mutex, int64_t deadline_ms)
{
    struct timespec until;
    until.tv_sec = (time_t)(deadline_ms / 1000);
    until.tv_nsec = (long)(deadline_ms % 1000) * 1000000L;
    pthread_cond_timedwait(cond, mutex, &until);
}

struct start { void (*run)(void *); void *argument; };

static void *thread_main(void *raw)
{
    struct start start = *(struct start *)raw;
    free(raw);
    start.run(start.argument);
    return NULL;
}

int cd_thread_start(cd_thread *thread, void (*run)(void *), void *argument)
{
    struct start *start = malloc(sizeof *start);
    if (start == NULL) return -1;
    start->run = run;
    start->argument = argument;
    if (pthread_create(thread, NULL, thread_main, start) != 0) {
        free(start);
        return -1;
    }
    return 0;
}

void cd_thread_join(cd_thread thread) { pthread_join(thread, NULL); }

int64_t cd_now_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

int cd_random(unsigned char *bytes, size_t size)
{
    FILE *source = fopen("/dev/urandom", "rb");
    size_t got;
    if (source == NULL) return -1;
    got = fread(bytes, 1, size, source);
    fclose(source);
    return got == size ? 0 : -1;
}

int64_t cd_pid(void) { return (int64_t)getpid(); }

void cd_program(char *buffer, size_t size)
{
    FILE *file;
    size_t length, index;
    if (size == 0) return;
    buffer[0] = '\0';
    file = fopen("/proc/self/cmdline", "rb"); /* Linux; elsewhere the program stays unknown */
    if (file == NULL) return;
    length = fread(buffer, 1, size - 1, file);
    fclose(file);
    while (length > 0 && buffer[length - 1] == '\0') length--;
    for (index = 0; index < length; index++)
        if (buffer[index] == '\0') buffer[index] = ' ';
    buffer[length] = '\0';
}

void cd_hostname(char *buffer, size_t size)
{
    if (size == 0) return;
    if (gethostname(buffer, size) != 0) buffer[0] = '\0';
    buffer[size - 1] = '\0';
}

#endif
