/* Opening and closing a client, and its counters. Publishing is in
 * publish.c and streams.c, requests in requests.c, the I/O thread in link.c. */
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

int collectord_close(collectord_client *c, double timeout)
{
    int code = COLLECTORD_OK;
    if (c == NULL) return COLLECTORD_OK;
    cd_mutex_lock(&c->lock);
    c->state = CD_CLOSING; /* no more publishing */
    cd_mutex_unlock(&c->lock);
    if (!(timeout >= 0) || timeout > 1e9) timeout = 0;
    code = cd_sync_upto(c, timeout, 1);
    if (code == COLLECTORD_OK) {
        /* Best effort: without it the daemon waits for this client at its next
         * stop for barrier_timeout; everything sent is confirmed already. */
        msgpack_sbuffer fields;
        msgpack_packer packer;
        cd_start_fields(&fields, &packer);
        cd_pack_cstr(&packer, "session");
        cd_pack_cstr(&packer, c->session);
        cd_ask(c, "bye", 1, &fields, 1, timeout < BYE_TIMEOUT ? timeout : BYE_TIMEOUT, 1, NULL,
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
