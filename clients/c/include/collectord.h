/*
 * collectord.h: the C client of the collectord daemon (protocol version 1).
 *
 * One opaque handle per client; every call returns an int, 0 on success or
 * one of the negative COLLECTORD_E_* codes below, and the reason as text is
 * then available from collectord_last_error() (the calling thread's last
 * failure) or collectord_client_error() (the handle's last failure, copied
 * into a caller's buffer).
 *
 * Publishing calls (collectord_set_*, collectord_add_*, collectord_declare_stream*,
 * collectord_append_rows) check and encode the value in the caller's thread,
 * give the message its sequence number and queue it: they never wait for the
 * network. One I/O thread per client owns both ZeroMQ sockets; it keeps every
 * message until the daemon confirms it (journaled), resends what the daemon
 * lacks after a gap or a daemon restart, and answers the stop barrier.
 * Request calls (collectord_sync, collectord_stop, collectord_restore_msgpack,
 * collectord_name_experiment, collectord_close) block the caller until the
 * daemon answers or the timeout passes.
 *
 * Every call is thread-safe, except that a handle must not be used during or
 * after collectord_close() on it.
 *
 * Strings are UTF-8. Names and paths are NUL-terminated; text values and
 * byte buffers take an explicit length in bytes. No structs cross the API,
 * no callbacks are needed: MATLAB's loadlibrary, LabVIEW's Call Library
 * Function node, C#'s P/Invoke and Python's ctypes can call every function.
 * See docs/c-client.md.
 */
#ifndef COLLECTORD_H
#define COLLECTORD_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#  if defined(COLLECTORD_BUILDING)
#    define COLLECTORD_API __declspec(dllexport)
#  else
#    define COLLECTORD_API __declspec(dllimport)
#  endif
#elif defined(__GNUC__)
#  define COLLECTORD_API __attribute__((visibility("default")))
#else
#  define COLLECTORD_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Return codes. */
#define COLLECTORD_OK 0
#define COLLECTORD_E_ARGUMENT (-1)   /* a bad argument: NULL, invalid path, name, dtype, size */
#define COLLECTORD_E_JSON (-2)       /* JSON text that does not parse (the message gives the byte offset) */
#define COLLECTORD_E_MSGPACK (-3)    /* msgpack bytes that are not one valid value */
#define COLLECTORD_E_TOO_LARGE (-4)  /* the message exceeds the daemon's size limit */
#define COLLECTORD_E_CLOSED (-5)     /* the client is closing or closed */
#define COLLECTORD_E_TIMEOUT (-6)    /* no answer from the daemon within the timeout */
#define COLLECTORD_E_REFUSED (-7)    /* the daemon refused the request (message: its code and text) */
#define COLLECTORD_E_TRANSPORT (-8)  /* ZeroMQ could not create or connect a socket */
#define COLLECTORD_E_MEMORY (-9)     /* out of memory */
#define COLLECTORD_E_BUFFER (-10)    /* the caller's output buffer is too small (see *needed) */
#define COLLECTORD_E_INTERNAL (-11)  /* a failure of the library itself or of the OS */

typedef struct collectord_client collectord_client;

/* The library's version, e.g. "0.1.0". */
COLLECTORD_API const char *collectord_version(void);

/* A fixed English description of a return code. */
COLLECTORD_API const char *collectord_strerror(int code);

/* The message of the calling thread's last failed call ("" if none). The
 * pointer stays valid until the thread's next failing call. */
COLLECTORD_API const char *collectord_last_error(void);

/* Copy the message of the last failed call on `client` (from any thread)
 * into `buffer` of `size` bytes, NUL-terminated and cut to fit. Returns the
 * message's full length in bytes (without the NUL). For callers (LabVIEW) whose
 * consecutive calls may run in different threads. */
COLLECTORD_API int collectord_client_error(collectord_client *client, char *buffer, size_t size);

/* Open a client named `name` (the name rules of docs/protocol.md), connected
 * to the daemon's data and control endpoints (NULL: tcp://127.0.0.1:13550 and
 * :13551). `buffer_messages` bounds the unconfirmed messages kept for
 * resending (0: 1,000,000); beyond it the oldest are dropped and counted.
 * Returns at once: the daemon need not be running yet. */
COLLECTORD_API int collectord_open(collectord_client **client, const char *name,
                                   const char *data_endpoint, const char *control_endpoint,
                                   uint64_t buffer_messages);

/* The same, to a daemon that uses ZeroMQ CURVE (its configuration names a
 * [security] server_key): `client_key_file` is this client's secret
 * certificate (`NAME.key_secret` from `collectord keygen`, whose public half is
 * in the daemon's authorized_clients folder) and `server_public_key_file` the
 * daemon's public certificate (`DAEMON.key`). */
COLLECTORD_API int collectord_open_secure(collectord_client **client, const char *name,
                                          const char *data_endpoint,
                                          const char *control_endpoint,
                                          uint64_t buffer_messages, const char *client_key_file,
                                          const char *server_public_key_file);

/* collectord_open, returning the client, or NULL on failure (the reason in
 * collectord_last_error()): for FFIs where an out-pointer is awkward
 * (MATLAB's calllib, LabVIEW, C#'s IntPtr). */
COLLECTORD_API collectord_client *collectord_new(const char *name, const char *data_endpoint,
                                                 const char *control_endpoint,
                                                 uint64_t buffer_messages);

/* Deliver what is unconfirmed (waiting up to `timeout` seconds), say bye,
 * stop the I/O thread and free the client. The handle is invalid afterwards,
 * whatever the return code (COLLECTORD_E_TIMEOUT: some messages were not
 * confirmed in time and are lost). NULL is a no-op. */
COLLECTORD_API int collectord_close(collectord_client *client, double timeout);

/* The client's session string (16 hex digits), valid while the client is open. */
COLLECTORD_API const char *collectord_session(collectord_client *client);

/* Parameters: merge one value named `name` into the group `path`. */
COLLECTORD_API int collectord_set_float(collectord_client *client, const char *path,
                                        const char *name, double value);
COLLECTORD_API int collectord_set_int(collectord_client *client, const char *path,
                                      const char *name, int64_t value);
COLLECTORD_API int collectord_set_bool(collectord_client *client, const char *path,
                                       const char *name, int value);
COLLECTORD_API int collectord_set_text(collectord_client *client, const char *path,
                                       const char *name, const char *text, size_t length);
/* The value as one msgpack object the caller packed, or as JSON text. */
COLLECTORD_API int collectord_set_msgpack(collectord_client *client, const char *path,
                                          const char *name, const void *bytes, size_t length);
COLLECTORD_API int collectord_set_json(collectord_client *client, const char *path,
                                       const char *name, const char *json, size_t length);
/* Several parameters at once, applied together: a msgpack map / a JSON object. */
COLLECTORD_API int collectord_set_params_msgpack(collectord_client *client, const char *path,
                                                 const void *bytes, size_t length);
COLLECTORD_API int collectord_set_params_json(collectord_client *client, const char *path,
                                              const char *json, size_t length);

/* Static data of the current experiment at `path`. */
COLLECTORD_API int collectord_add_float(collectord_client *client, const char *path, double value);
COLLECTORD_API int collectord_add_int(collectord_client *client, const char *path, int64_t value);
COLLECTORD_API int collectord_add_bool(collectord_client *client, const char *path, int value);
COLLECTORD_API int collectord_add_text(collectord_client *client, const char *path,
                                       const char *text, size_t length);
/* A list of `count` numbers. */
COLLECTORD_API int collectord_add_floats(collectord_client *client, const char *path,
                                         const double *values, size_t count);
COLLECTORD_API int collectord_add_ints(collectord_client *client, const char *path,
                                       const int64_t *values, size_t count);
COLLECTORD_API int collectord_add_msgpack(collectord_client *client, const char *path,
                                          const void *bytes, size_t length);
COLLECTORD_API int collectord_add_json(collectord_client *client, const char *path,
                                       const char *json, size_t length);

/* Declare a stream at `path`: `column_count` columns named `columns`, all of
 * numpy dtype `dtype` ("<f8", "<f4", "<i8", "<i4", "<i2", "|i1", "<u8", "<u4",
 * "<u2", "|u1", "<f2", "|b1"), with optional `units` (NULL, or one per column). */
COLLECTORD_API int collectord_declare_stream(collectord_client *client, const char *path,
                                             const char *const *columns, size_t column_count,
                                             const char *dtype, const char *const *units);
/* The same with the columns (and units, or NULL) as JSON arrays of strings,
 * e.g. "[\"x\", \"y\"]": easier from MATLAB and LabVIEW. */
COLLECTORD_API int collectord_declare_stream_json(collectord_client *client, const char *path,
                                                  const char *columns_json, const char *dtype,
                                                  const char *units_json);
/* Append `row_count` rows to a stream this client declared: `rows` holds them
 * in C order (row after row), little-endian, `length` bytes, which must be
 * row_count * columns * itemsize. The rows are copied before the call
 * returns. Each call sends its rows as one block (or several, if too large
 * for one message): append many rows per call when you can. */
COLLECTORD_API int collectord_append_rows(collectord_client *client, const char *path,
                                          const void *rows, uint64_t row_count, size_t length);

/* Wait until the daemon has journaled every message this client published. */
COLLECTORD_API int collectord_sync(collectord_client *client, double timeout);

/* Stop the current experiment (after everything published so far arrived)
 * and copy the saved metadata file's path, NUL-terminated, into `path`
 * (`size` bytes). `needed`, if not NULL, receives the path's length + 1. */
COLLECTORD_API int collectord_stop(collectord_client *client, const char *reason, double timeout,
                                   char *path, size_t size, size_t *needed);

/* Name the current experiment (its folder and metadata file take the name). */
COLLECTORD_API int collectord_name_experiment(collectord_client *client, const char *name,
                                              double timeout);

/* The values the last config holds under `node`, as one msgpack map, into
 * `buffer` (`size` bytes); `length` receives the map's size in bytes (also
 * when the buffer is too small: COLLECTORD_E_BUFFER). */
COLLECTORD_API int collectord_restore_msgpack(collectord_client *client, const char *node,
                                              double timeout, void *buffer, size_t size,
                                              size_t *length);

/* Messages published and not yet confirmed by the daemon. */
COLLECTORD_API int collectord_unconfirmed(collectord_client *client, uint64_t *count);
/* Messages dropped unconfirmed because the resend buffer was full. */
COLLECTORD_API int collectord_overflowed(collectord_client *client, uint64_t *count);
/* The sequence number of the last message published (0 if none). */
COLLECTORD_API int collectord_last_seq(collectord_client *client, uint64_t *seq);

#ifdef __cplusplus
}
#endif

#endif /* COLLECTORD_H */
