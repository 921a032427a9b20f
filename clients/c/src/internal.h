/* What the library's modules share: the client object, queued messages and
 * requests. Not installed; the public API is include/collectord.h. */
#ifndef COLLECTORD_INTERNAL_H
#define COLLECTORD_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "collectord.h"
#include "platform.h"
#include "unconfirmed.h"

#define CD_VERSION "0.1.0"
#define CD_PROTOCOL 1
#define CD_ERROR_BYTES 512
#define CD_SESSION_BYTES 17 /* 16 hex digits and a NUL */
#define CD_KEY_BYTES 41     /* a CURVE key in Z85 and a NUL */

/* Kinds of data messages (their names: cd_kind_name). */
enum cd_kind { CD_PARAMS, CD_DATA, CD_STREAM, CD_BLOCK };
const char *cd_kind_name(int kind);

/* One data message, owned by the outbox, then by the I/O thread's buffer. */
typedef struct cd_message {
    uint64_t seq;
    int kind;
    char *body; /* the msgpack body */
    size_t body_size;
    char *rows; /* a block's raw rows (the third frame), else NULL */
    size_t rows_size;
    struct cd_message *next; /* in the outbox */
} cd_message;

void cd_message_free(cd_message *message);

/* cd_request.idempotent of a stop with a stop_id. */
#define CD_IF_STOP_IDS 2

/* A control request a caller waits for; the I/O thread gives it its id. */
typedef struct cd_request {
    const char *command;
    int idempotent;      /* may be sent again to a restarted daemon: 1, or
                          * CD_IF_STOP_IDS (a stop with its stop_id): only to a
                          * daemon whose hello said it answers stop ids */
    char *fields;        /* msgpack key/value pairs after v, cmd, id */
    size_t fields_size;
    uint32_t field_count;
    uint64_t id;
    int done;            /* answered (or failed): `code`, `result`, `error` */
    int abandoned;       /* the caller gave up waiting: whoever finishes frees it */
    int code;
    char *result;        /* the reply's `result` map, msgpack */
    size_t result_size;
    char error[CD_ERROR_BYTES];
    struct cd_request *next;
} cd_request;

void cd_request_free(cd_request *request);

/* A msgpack-c write target that starts in place, for a message's body: small
 * bodies cost no allocation until their exact-size copy (cd_buf_copy). Do
 * not copy the struct itself: `data` may point into it. */
typedef struct cd_buf {
    char *data;
    size_t size, alloc;
    int failed; /* out of memory while writing */
    char local[512];
} cd_buf;
void cd_buf_init(cd_buf *buffer);
int cd_buf_write(void *buffer, const char *bytes, size_t length); /* a msgpack_packer_write */
void cd_buf_free(cd_buf *buffer);

/* A stream this client declared: what appending rows needs to check. */
typedef struct cd_stream {
    char *path;
    size_t columns;
    size_t itemsize;
} cd_stream;

enum cd_state { CD_OPEN, CD_CLOSING, CD_CLOSED };

struct collectord_client {
    char *name;
    char session[CD_SESSION_BYTES];
    char *data_endpoint;
    char *control_endpoint;
    char *hello_fields; /* name, host, pid, program, versions: msgpack pairs */
    size_t hello_size;
    uint32_t hello_count;
    uint64_t buffer_limit;
    int curve; /* CURVE keys below are set */
    char server_key[CD_KEY_BYTES], public_key[CD_KEY_BYTES], secret_key[CD_KEY_BYTES];

    void *context;
    void *wake_tx; /* callers' end of the wake-up PAIR, used under `lock` */
    void *wake_rx; /* the I/O thread's end */
    void *pub;     /* XPUB to the data endpoint, I/O thread only */
    void *dealer;  /* DEALER to the control endpoint, I/O thread only */
    cd_thread thread;

    /* Shared between callers and the I/O thread, under `lock`. */
    cd_mutex lock;
    cd_cond answered; /* a request got its answer */
    int state;
    int sleeping;  /* the I/O thread is (about to be) blocked in poll */
    int finishing; /* the I/O thread must exit */
    uint64_t seq;  /* last sequence number given out */
    cd_message *outbox_head, *outbox_tail;
    uint64_t outbox_count;
    cd_request *requests_head, *requests_tail;
    uint64_t acked;        /* copy of link.acked */
    uint64_t held;         /* copy of the unconfirmed buffer's count */
    uint64_t overflowed;   /* copy of link.overflowed */
    uint64_t body_limit;   /* largest body (rows included) of one message */
    cd_stream *streams;
    size_t stream_count;
    char error[CD_ERROR_BYTES];

    /* The I/O thread's own state (link.c). */
    struct {
        cd_unconfirmed unacked;
        uint64_t sent;  /* highest seq handed to the data socket */
        uint64_t acked; /* highest seq the daemon confirmed */
        uint64_t overflowed;
        uint64_t dropped_upto;
        uint64_t dropped_reported;
        int subscribed;
        int introduced; /* hello answered since the last subscription */
        uint64_t next_id;
        uint64_t hello_id;
        int64_t hello_at;
        uint64_t ack_id;
        int64_t ack_at;
        int64_t stalled_since; /* 0: not stalled */
        cd_request *pending;   /* sent, awaiting their replies */
        cd_request *unsent_head, *unsent_tail; /* the control queue was full: in order */
        uint64_t max_message_bytes;
        int stop_ids; /* the daemon's hello: a stop sent again gets its save */
    } link;
};

/* errors.c: record a failure for collectord_last_error() and the handle,
 * and return `code`. `client` may be NULL. */
int cd_fail(collectord_client *client, int code, const char *format, ...)
#if defined(__MINGW32__)
    /* MinGW's printf checks are Microsoft's unless told otherwise; the
     * library is built with __USE_MINGW_ANSI_STDIO (%zu, %llu). */
    __attribute__((format(gnu_printf, 3, 4)))
#elif defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* names.c: 0 if `text` follows the rules, else a message in `why`. */
int cd_check_name(const char *text, size_t length, char *why, size_t why_size);
int cd_check_path(const char *path, char *why, size_t why_size);
/* cd_check_name, and a name Windows can create as a file or folder (the
 * names of a stream's path, an experiment's name). */
int cd_check_file_name(const char *text, size_t length, char *why, size_t why_size);
int cd_check_utf8(const char *text, size_t length);

/* values.c: whether `bytes` are exactly one msgpack value the daemon takes,
 * containers at most `depth` levels deep; 0, or a message in `why`. */
int cd_check_value(const char *bytes, size_t length, int depth, char *why, size_t why_size);
/* Nesting limits (docs/protocol.md, Limits). */
#define CD_DATA_DEPTH 64
#define CD_PARAM_DEPTH 63

/* json.c: JSON text to one msgpack value, containers at most `depth` levels
 * deep, packed with `packer` (nothing is packed if the text is refused); 0,
 * or a message (naming the byte offset) in `why`. */
int cd_json_to_msgpack(const char *json, size_t length, int depth, msgpack_packer *packer,
                       char *why, size_t why_size);

/* keys.c: the Z85 text of `field` ("public-key" or "secret-key") of a
 * certificate file; 0, or a message in `why`. */
int cd_load_key(const char *path, const char *field, char key[CD_KEY_BYTES], char *why,
                size_t why_size);

/* publish.c: queueing messages. */
int cd_check_call(collectord_client *client, const char *path);
/* A message of `kind` whose body is `body` and, for a block, `rows` (both copied). */
int cd_new_message(collectord_client *client, int kind, const cd_buf *body, const void *rows,
                   size_t rows_size, cd_message **out);
/* Number and queue a chain of `count` messages, all or none. */
int cd_enqueue(collectord_client *client, cd_message *messages, size_t count);
/* Queue the message whose body is `body` (checked against the size limit); free `body`. */
int cd_publish(collectord_client *client, int kind, cd_buf *body);

/* requests.c */
/* Ask the daemon `command` with `fields` (msgpack key/value pairs, `count` of
 * them; taken over) and wait up to `timeout` s; on success *result (if not
 * NULL) holds the reply's result map as msgpack, to free. */
int cd_ask(collectord_client *client, const char *command, int idempotent,
           msgpack_sbuffer *fields, uint32_t count, double timeout, int closing_ok, char **result,
           size_t *result_size);
void cd_start_fields(msgpack_sbuffer *buffer, msgpack_packer *packer);
/* Wait until the daemon journaled every message published so far. */
int cd_sync_upto(collectord_client *client, double timeout, int closing_ok);

/* link.c: the I/O thread. */
void cd_link_run(void *client);
/* Wake the I/O thread if it sleeps; call with `lock` held. */
void cd_wake(collectord_client *client);

/* msgpack helpers (pack.c). */
void cd_pack_text(msgpack_packer *packer, const char *text, size_t length);
void cd_pack_cstr(msgpack_packer *packer, const char *text);
/* The value at `key` of a msgpack map, or NULL. */
const msgpack_object *cd_map_get(const msgpack_object *map, const char *key);
/* An unsigned integer at `key`, or `fallback`. */
uint64_t cd_map_uint(const msgpack_object *map, const char *key, uint64_t fallback);

#endif
