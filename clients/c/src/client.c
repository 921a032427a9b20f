/* The public calls: opening and closing a client, publishing (never
 * blocking: encode, number, queue), and requests (block the caller until the
 * I/O thread hands over the daemon's answer, or the timeout passes). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#include "internal.h"

#define DEFAULT_DATA "tcp://127.0.0.1:13550"
#define DEFAULT_CONTROL "tcp://127.0.0.1:13551"
#define DEFAULT_BUFFER 1000000u
#define DEFAULT_MAX_MESSAGE_BYTES 67108864u /* the daemon's default, until hello says */
#define BYE_TIMEOUT 2.0
#define BLOCK_BYTES (8u * 1024u * 1024u) /* largest block one append sends */
#define MAX_COLUMNS 4096

const char *collectord_version(void) { return CD_VERSION; }

const char *cd_kind_name(int kind)
{
    switch (kind) {
    case CD_PARAMS: return "params";
    case CD_DATA: return "data";
    case CD_STREAM: return "stream";
    default: return "block";
    }
}

void cd_message_free(cd_message *message)
{
    if (message == NULL) return;
    free(message->body);
    free(message->rows);
    free(message);
}

void cd_request_free(cd_request *request)
{
    if (request == NULL) return;
    free(request->fields);
    free(request->result);
    free(request);
}

static char *copy_text(const char *text)
{
    size_t length = strlen(text);
    char *copy = malloc(length + 1);
    if (copy != NULL) memcpy(copy, text, length + 1);
    return copy;
}

/* -- opening and closing ------------------------------------------------------ */

static int pack_hello(collectord_client *c)
{
    msgpack_sbuffer buffer;
    msgpack_packer packer;
    char host[256], program[1024], libzmq[32];
    int major, minor, patch;
    cd_hostname(host, sizeof host);
    if (cd_check_utf8(host, strlen(host)) != 0) host[0] = '\0';
    cd_program(program, sizeof program);
    /* A command line cut inside a UTF-8 character would make hello invalid. */
    while (program[0] != '\0' && cd_check_utf8(program, strlen(program)) != 0)
        program[strlen(program) - 1] = '\0';
    zmq_version(&major, &minor, &patch);
    snprintf(libzmq, sizeof libzmq, "%d.%d.%d", major, minor, patch);
    msgpack_sbuffer_init(&buffer);
    msgpack_packer_init(&packer, &buffer, msgpack_sbuffer_write);
    cd_pack_cstr(&packer, "name");
    cd_pack_cstr(&packer, c->name);
    cd_pack_cstr(&packer, "host");
    cd_pack_cstr(&packer, host);
    cd_pack_cstr(&packer, "pid");
    msgpack_pack_int64(&packer, cd_pid());
    cd_pack_cstr(&packer, "program");
    cd_pack_cstr(&packer, program);
    cd_pack_cstr(&packer, "versions");
    msgpack_pack_map(&packer, 3);
    cd_pack_cstr(&packer, "collectord-c");
    cd_pack_cstr(&packer, CD_VERSION);
    cd_pack_cstr(&packer, "libzmq");
    cd_pack_cstr(&packer, libzmq);
    cd_pack_cstr(&packer, "msgpack-c");
    cd_pack_cstr(&packer, msgpack_version());
    c->hello_count = 5;
    c->hello_size = buffer.size;
    c->hello_fields = msgpack_sbuffer_release(&buffer);
    return c->hello_fields == NULL ? -1 : 0;
}

static void free_client(collectord_client *c)
{
    cd_message *message;
    cd_request *request;
    size_t index;
    while ((message = c->outbox_head) != NULL) {
        c->outbox_head = message->next;
        cd_message_free(message);
    }
    while ((request = c->requests_head) != NULL) {
        c->requests_head = request->next;
        cd_request_free(request);
    }
    cd_unconfirmed_free(&c->link.unacked);
    for (index = 0; index < c->stream_count; index++) free(c->streams[index].path);
    free(c->streams);
    free(c->hello_fields);
    free(c->name);
    free(c->data_endpoint);
    free(c->control_endpoint);
    free(c);
}

static int set_options(void *socket)
{
    int zero = 0, interval = 1000, timeout = 5000;
    return zmq_setsockopt(socket, ZMQ_LINGER, &zero, sizeof zero)
           | zmq_setsockopt(socket, ZMQ_HEARTBEAT_IVL, &interval, sizeof interval)
           | zmq_setsockopt(socket, ZMQ_HEARTBEAT_TIMEOUT, &timeout, sizeof timeout);
}

/* Sockets, connected; the I/O thread takes them over. */
static int open_sockets(collectord_client *c)
{
    char address[64];
    int one = 1, hwm = 10000;
    snprintf(address, sizeof address, "inproc://collectord-wake-%s", c->session);
    c->context = zmq_ctx_new();
    if (c->context == NULL) return cd_fail(NULL, COLLECTORD_E_TRANSPORT, "zmq_ctx_new failed");
    c->wake_rx = zmq_socket(c->context, ZMQ_PAIR);
    c->wake_tx = zmq_socket(c->context, ZMQ_PAIR);
    c->pub = zmq_socket(c->context, ZMQ_XPUB);
    c->dealer = zmq_socket(c->context, ZMQ_DEALER);
    if (c->wake_rx == NULL || c->wake_tx == NULL || c->pub == NULL || c->dealer == NULL
        || zmq_bind(c->wake_rx, address) != 0 || zmq_connect(c->wake_tx, address) != 0)
        return cd_fail(NULL, COLLECTORD_E_TRANSPORT, "cannot create the client's sockets: %s",
                       zmq_strerror(zmq_errno()));
    /* VERBOSE: a restarted daemon's subscription reaches us (a connecting socket
     * keeps its pipe, and would filter it out as a duplicate otherwise). */
    if (zmq_setsockopt(c->pub, ZMQ_XPUB_NODROP, &one, sizeof one) != 0
        || zmq_setsockopt(c->pub, ZMQ_XPUB_VERBOSE, &one, sizeof one) != 0
        || zmq_setsockopt(c->pub, ZMQ_SNDHWM, &hwm, sizeof hwm) != 0
        || zmq_setsockopt(c->dealer, ZMQ_ROUTING_ID, c->session, strlen(c->session)) != 0
        || set_options(c->pub) != 0 || set_options(c->dealer) != 0 || set_options(c->wake_tx) != 0)
        return cd_fail(NULL, COLLECTORD_E_TRANSPORT, "cannot set socket options: %s",
                       zmq_strerror(zmq_errno()));
    if (c->curve) {
        int index;
        void *sockets[2];
        sockets[0] = c->pub;
        sockets[1] = c->dealer;
        for (index = 0; index < 2; index++)
            if (zmq_setsockopt(sockets[index], ZMQ_CURVE_SERVERKEY, c->server_key, 40) != 0
                || zmq_setsockopt(sockets[index], ZMQ_CURVE_PUBLICKEY, c->public_key, 40) != 0
                || zmq_setsockopt(sockets[index], ZMQ_CURVE_SECRETKEY, c->secret_key, 40) != 0)
                return cd_fail(NULL, COLLECTORD_E_TRANSPORT,
                               "cannot use the CURVE keys (is libzmq built with CURVE?): %s",
                               zmq_strerror(zmq_errno()));
    }
    if (zmq_connect(c->pub, c->data_endpoint) != 0)
        return cd_fail(NULL, COLLECTORD_E_TRANSPORT, "cannot connect to %s: %s", c->data_endpoint,
                       zmq_strerror(zmq_errno()));
    if (zmq_connect(c->dealer, c->control_endpoint) != 0)
        return cd_fail(NULL, COLLECTORD_E_TRANSPORT, "cannot connect to %s: %s",
                       c->control_endpoint, zmq_strerror(zmq_errno()));
    return COLLECTORD_OK;
}

static void close_sockets(collectord_client *c)
{
    void **sockets[4];
    int index;
    sockets[0] = &c->wake_rx;
    sockets[1] = &c->wake_tx;
    sockets[2] = &c->pub;
    sockets[3] = &c->dealer;
    for (index = 0; index < 4; index++)
        if (*sockets[index] != NULL) {
            zmq_close(*sockets[index]);
            *sockets[index] = NULL;
        }
    if (c->context != NULL) zmq_ctx_term(c->context);
    c->context = NULL;
}

/* collectord_open and collectord_open_secure; `client_key` and `server_key`
 * are certificate files, or both NULL for no CURVE. */
static int open_client(collectord_client **out, const char *name, const char *data_endpoint,
                       const char *control_endpoint, uint64_t buffer_messages,
                       const char *client_key, const char *server_key)
{
    collectord_client *c;
    char why[CD_ERROR_BYTES];
    unsigned char random[8];
    int index, code;
    if (out == NULL) return cd_fail(NULL, COLLECTORD_E_ARGUMENT, "client pointer is NULL");
    *out = NULL;
    if (name == NULL) return cd_fail(NULL, COLLECTORD_E_ARGUMENT, "client name is NULL");
    if (cd_check_name(name, strlen(name), why, sizeof why) != 0)
        return cd_fail(NULL, COLLECTORD_E_ARGUMENT, "client name: %s", why);
    if (cd_random(random, sizeof random) != 0)
        return cd_fail(NULL, COLLECTORD_E_INTERNAL, "no random source for the session");
    c = calloc(1, sizeof *c);
    if (c == NULL) return cd_fail(NULL, COLLECTORD_E_MEMORY, "out of memory");
    for (index = 0; index < 8; index++) snprintf(c->session + 2 * index, 3, "%02x", random[index]);
    c->name = copy_text(name);
    c->data_endpoint = copy_text(data_endpoint ? data_endpoint : DEFAULT_DATA);
    c->control_endpoint = copy_text(control_endpoint ? control_endpoint : DEFAULT_CONTROL);
    c->buffer_limit = buffer_messages ? buffer_messages : DEFAULT_BUFFER;
    c->body_limit = DEFAULT_MAX_MESSAGE_BYTES - 1024;
    c->link.max_message_bytes = DEFAULT_MAX_MESSAGE_BYTES;
    if (client_key != NULL || server_key != NULL) {
        if (cd_load_key(client_key, "public-key", c->public_key, why, sizeof why) != 0
            || cd_load_key(client_key, "secret-key", c->secret_key, why, sizeof why) != 0
            || cd_load_key(server_key, "public-key", c->server_key, why, sizeof why) != 0) {
            free_client(c);
            return cd_fail(NULL, COLLECTORD_E_ARGUMENT, "%s", why);
        }
        c->curve = 1;
    }
    if (c->name == NULL || c->data_endpoint == NULL || c->control_endpoint == NULL
        || pack_hello(c) != 0) {
        free_client(c);
        return cd_fail(NULL, COLLECTORD_E_MEMORY, "out of memory");
    }
    if (cd_mutex_init(&c->lock) != 0) {
        free_client(c);
        return cd_fail(NULL, COLLECTORD_E_INTERNAL, "cannot create a mutex");
    }
    if (cd_cond_init(&c->answered) != 0) {
        cd_mutex_destroy(&c->lock);
        free_client(c);
        return cd_fail(NULL, COLLECTORD_E_INTERNAL, "cannot create a condition variable");
    }
    code = open_sockets(c);
    if (code == COLLECTORD_OK && cd_thread_start(&c->thread, cd_link_run, c) != 0)
        code = cd_fail(NULL, COLLECTORD_E_INTERNAL, "cannot start the I/O thread");
    if (code != COLLECTORD_OK) {
        close_sockets(c);
        cd_cond_destroy(&c->answered);
        cd_mutex_destroy(&c->lock);
        free_client(c);
        return code;
    }
    *out = c;
    return COLLECTORD_OK;
}

int collectord_open(collectord_client **out, const char *name, const char *data_endpoint,
                    const char *control_endpoint, uint64_t buffer_messages)
{
    return open_client(out, name, data_endpoint, control_endpoint, buffer_messages, NULL, NULL);
}

int collectord_open_secure(collectord_client **out, const char *name, const char *data_endpoint,
                           const char *control_endpoint, uint64_t buffer_messages,
                           const char *client_key_file, const char *server_public_key_file)
{
    if (client_key_file == NULL || server_public_key_file == NULL)
        return cd_fail(NULL, COLLECTORD_E_ARGUMENT,
                       "CURVE needs both the client's key file and the daemon's public key file");
    return open_client(out, name, data_endpoint, control_endpoint, buffer_messages,
                       client_key_file, server_public_key_file);
}

collectord_client *collectord_new(const char *name, const char *data_endpoint,
                                  const char *control_endpoint, uint64_t buffer_messages)
{
    collectord_client *client = NULL;
    collectord_open(&client, name, data_endpoint, control_endpoint, buffer_messages);
    return client;
}

const char *collectord_session(collectord_client *client)
{
    return client == NULL ? "" : client->session;
}

/* -- requests ------------------------------------------------------------------ */

/* Ask the daemon `command` with `fields` (msgpack pairs, `count` of them) and
 * wait up to `timeout` s. On success *result holds the reply's result map
 * (msgpack; free it). */
static int request(collectord_client *c, const char *command, int idempotent,
                   msgpack_sbuffer *fields, uint32_t count, double timeout, int closing_ok,
                   char **result, size_t *result_size)
{
    cd_request *r;
    int64_t deadline;
    int code;
    if (!(timeout >= 0) || timeout > 1e9)
        return cd_fail(c, COLLECTORD_E_ARGUMENT, "timeout must be seconds >= 0, not %g", timeout);
    r = calloc(1, sizeof *r);
    if (r == NULL) return cd_fail(c, COLLECTORD_E_MEMORY, "out of memory");
    r->command = command;
    r->idempotent = idempotent;
    r->field_count = count;
    r->fields_size = fields->size;
    r->fields = msgpack_sbuffer_release(fields);
    deadline = cd_now_ms() + (int64_t)(timeout * 1000.0);
    cd_mutex_lock(&c->lock);
    if (c->state == CD_CLOSED || (c->state == CD_CLOSING && !closing_ok)) {
        cd_mutex_unlock(&c->lock);
        cd_request_free(r);
        return cd_fail(c, COLLECTORD_E_CLOSED, "client '%s' is closed", c->name);
    }
    if (c->requests_tail) c->requests_tail->next = r;
    else c->requests_head = r;
    c->requests_tail = r;
    cd_wake(c);
    while (!r->done && cd_now_ms() < deadline) cd_cond_wait_until(&c->answered, &c->lock, deadline);
    if (!r->done) {
        r->abandoned = 1; /* the I/O thread frees it when it is answered or closes */
        cd_mutex_unlock(&c->lock);
        return cd_fail(c, COLLECTORD_E_TIMEOUT,
                       "no answer to '%s' from the daemon at %s within %g s: is `collectord run` "
                       "running there?",
                       command, c->control_endpoint, timeout);
    }
    cd_mutex_unlock(&c->lock);
    code = r->code;
    if (code != COLLECTORD_OK) {
        cd_fail(c, code, "%s", r->error);
    } else if (result != NULL) {
        *result = r->result;
        *result_size = r->result_size;
        r->result = NULL;
    }
    cd_request_free(r);
    return code;
}

static void start_fields(msgpack_sbuffer *buffer, msgpack_packer *packer)
{
    msgpack_sbuffer_init(buffer);
    msgpack_packer_init(packer, buffer, msgpack_sbuffer_write);
}

static int sync_upto(collectord_client *c, double timeout, int closing_ok)
{
    msgpack_sbuffer fields;
    msgpack_packer packer;
    uint64_t seq, acked;
    int code;
    cd_mutex_lock(&c->lock);
    seq = c->seq;
    acked = c->acked;
    cd_mutex_unlock(&c->lock);
    if (acked >= seq) return COLLECTORD_OK; /* the daemon journaled every message already */
    start_fields(&fields, &packer);
    cd_pack_cstr(&packer, "session");
    cd_pack_cstr(&packer, c->session);
    cd_pack_cstr(&packer, "seq");
    msgpack_pack_uint64(&packer, seq);
    code = request(c, "sync", 1, &fields, 2, timeout, closing_ok, NULL, NULL);
    msgpack_sbuffer_destroy(&fields);
    return code;
}

int collectord_sync(collectord_client *client, double timeout)
{
    if (client == NULL) return cd_fail(NULL, COLLECTORD_E_ARGUMENT, "client is NULL");
    return sync_upto(client, timeout, 0);
}

int collectord_close(collectord_client *c, double timeout)
{
    int code = COLLECTORD_OK;
    if (c == NULL) return COLLECTORD_OK;
    cd_mutex_lock(&c->lock);
    c->state = CD_CLOSING; /* no more publishing */
    cd_mutex_unlock(&c->lock);
    if (!(timeout >= 0) || timeout > 1e9) timeout = 0;
    code = sync_upto(c, timeout, 1);
    if (code == COLLECTORD_OK) {
        /* Best effort: without it the daemon waits for this client at its next
         * stop for barrier_timeout; everything sent is confirmed already. */
        msgpack_sbuffer fields;
        msgpack_packer packer;
        start_fields(&fields, &packer);
        cd_pack_cstr(&packer, "session");
        cd_pack_cstr(&packer, c->session);
        request(c, "bye", 1, &fields, 1, timeout < BYE_TIMEOUT ? timeout : BYE_TIMEOUT, 1, NULL,
                NULL);
        msgpack_sbuffer_destroy(&fields);
    } else {
        char why[CD_ERROR_BYTES];
        uint64_t lost;
        cd_mutex_lock(&c->lock);
        lost = c->held + c->outbox_count;
        memcpy(why, c->error, sizeof why);
        cd_mutex_unlock(&c->lock);
        code = cd_fail(NULL, code, "%s; %llu messages unconfirmed at close", why,
                       (unsigned long long)lost);
    }
    cd_mutex_lock(&c->lock);
    c->finishing = 1;
    c->sleeping = 1;
    cd_wake(c);
    c->state = CD_CLOSED;
    cd_mutex_unlock(&c->lock);
    cd_thread_join(c->thread);
    close_sockets(c);
    cd_cond_destroy(&c->answered);
    cd_mutex_destroy(&c->lock);
    free_client(c);
    return code;
}

/* The `path` (a str) of a result map, copied into the caller's buffer. */
static int copy_result_text(collectord_client *c, const char *result, size_t result_size,
                            const char *key, char *out, size_t size, size_t *needed)
{
    msgpack_unpacked unpacked;
    size_t offset = 0;
    const msgpack_object *value;
    int code = COLLECTORD_OK;
    msgpack_unpacked_init(&unpacked);
    if (msgpack_unpack_next(&unpacked, result, result_size, &offset) != MSGPACK_UNPACK_SUCCESS
        || (value = cd_map_get(&unpacked.data, key)) == NULL || value->type != MSGPACK_OBJECT_STR) {
        code = cd_fail(c, COLLECTORD_E_INTERNAL, "the daemon's reply has no '%s'", key);
    } else {
        if (needed != NULL) *needed = value->via.str.size + 1;
        if (out == NULL || size < value->via.str.size + 1) {
            code = cd_fail(c, COLLECTORD_E_BUFFER, "'%s' needs %zu bytes, the buffer has %zu", key,
                           (size_t)value->via.str.size + 1, out == NULL ? (size_t)0 : size);
        } else {
            memcpy(out, value->via.str.ptr, value->via.str.size);
            out[value->via.str.size] = '\0';
        }
    }
    msgpack_unpacked_destroy(&unpacked);
    return code;
}

int collectord_stop(collectord_client *c, const char *reason, double timeout, char *path,
                    size_t size, size_t *needed)
{
    msgpack_sbuffer fields;
    msgpack_packer packer;
    char *result = NULL;
    size_t result_size = 0;
    uint64_t seq;
    int code;
    if (c == NULL) return cd_fail(NULL, COLLECTORD_E_ARGUMENT, "client is NULL");
    if (reason != NULL && cd_check_utf8(reason, strlen(reason)) != 0)
        return cd_fail(c, COLLECTORD_E_ARGUMENT, "reason is not valid UTF-8");
    cd_mutex_lock(&c->lock);
    seq = c->seq;
    cd_mutex_unlock(&c->lock);
    start_fields(&fields, &packer);
    cd_pack_cstr(&packer, "reason");
    if (reason != NULL && reason[0] != '\0') cd_pack_cstr(&packer, reason);
    else {
        char text[300];
        snprintf(text, sizeof text, "stop from %s", c->name);
        cd_pack_cstr(&packer, text);
    }
    cd_pack_cstr(&packer, "session");
    cd_pack_cstr(&packer, c->session);
    cd_pack_cstr(&packer, "seq");
    msgpack_pack_uint64(&packer, seq);
    code = request(c, "stop", 0, &fields, 3, timeout, 0, &result, &result_size);
    msgpack_sbuffer_destroy(&fields);
    if (code == COLLECTORD_OK)
        code = copy_result_text(c, result, result_size, "path", path, size, needed);
    free(result);
    return code;
}

int collectord_name_experiment(collectord_client *c, const char *name, double timeout)
{
    msgpack_sbuffer fields;
    msgpack_packer packer;
    char why[CD_ERROR_BYTES];
    int code;
    if (c == NULL || name == NULL)
        return cd_fail(c, COLLECTORD_E_ARGUMENT, "client or name is NULL");
    if (cd_check_name(name, strlen(name), why, sizeof why) != 0)
        return cd_fail(c, COLLECTORD_E_ARGUMENT, "experiment name: %s", why);
    start_fields(&fields, &packer);
    cd_pack_cstr(&packer, "name");
    cd_pack_cstr(&packer, name);
    cd_pack_cstr(&packer, "session");
    cd_pack_cstr(&packer, c->session);
    code = request(c, "name", 0, &fields, 2, timeout, 0, NULL, NULL);
    msgpack_sbuffer_destroy(&fields);
    return code;
}

int collectord_restore_msgpack(collectord_client *c, const char *node, double timeout,
                               void *buffer, size_t size, size_t *length)
{
    msgpack_sbuffer fields;
    msgpack_packer packer;
    msgpack_unpacked unpacked;
    char why[CD_ERROR_BYTES];
    char *result = NULL;
    size_t result_size = 0, offset = 0;
    const msgpack_object *values;
    int code;
    if (c == NULL) return cd_fail(NULL, COLLECTORD_E_ARGUMENT, "client is NULL");
    if (cd_check_path(node, why, sizeof why) != 0)
        return cd_fail(c, COLLECTORD_E_ARGUMENT, "%s", why);
    start_fields(&fields, &packer);
    cd_pack_cstr(&packer, "node");
    cd_pack_cstr(&packer, node);
    cd_pack_cstr(&packer, "session");
    cd_pack_cstr(&packer, c->session);
    code = request(c, "restore", 1, &fields, 2, timeout, 0, &result, &result_size);
    msgpack_sbuffer_destroy(&fields);
    if (code != COLLECTORD_OK) return code;
    msgpack_unpacked_init(&unpacked);
    if (msgpack_unpack_next(&unpacked, result, result_size, &offset) != MSGPACK_UNPACK_SUCCESS
        || (values = cd_map_get(&unpacked.data, "values")) == NULL) {
        code = cd_fail(c, COLLECTORD_E_INTERNAL, "the daemon's reply has no 'values'");
    } else {
        msgpack_sbuffer packed;
        msgpack_sbuffer_init(&packed);
        msgpack_packer_init(&packer, &packed, msgpack_sbuffer_write);
        msgpack_pack_object(&packer, *values);
        if (length != NULL) *length = packed.size;
        if (buffer == NULL || size < packed.size)
            code = cd_fail(c, COLLECTORD_E_BUFFER, "the values need %zu bytes, the buffer has %zu",
                           packed.size, buffer == NULL ? (size_t)0 : size);
        else
            memcpy(buffer, packed.data, packed.size);
        msgpack_sbuffer_destroy(&packed);
    }
    msgpack_unpacked_destroy(&unpacked);
    free(result);
    return code;
}

/* -- counters ------------------------------------------------------------------ */

static int read_counter(collectord_client *c, uint64_t *out, int which)
{
    if (c == NULL || out == NULL) return cd_fail(c, COLLECTORD_E_ARGUMENT, "NULL argument");
    cd_mutex_lock(&c->lock);
    *out = which == 0 ? c->held + c->outbox_count : which == 1 ? c->overflowed : c->seq;
    cd_mutex_unlock(&c->lock);
    return COLLECTORD_OK;
}

int collectord_unconfirmed(collectord_client *c, uint64_t *count) { return read_counter(c, count, 0); }
int collectord_overflowed(collectord_client *c, uint64_t *count) { return read_counter(c, count, 1); }
int collectord_last_seq(collectord_client *c, uint64_t *seq) { return read_counter(c, seq, 2); }
