/* Requests: each blocks its caller until the I/O thread hands over the
 * daemon's answer, or the timeout passes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int cd_ask(collectord_client *c, const char *command, int idempotent, msgpack_sbuffer *fields,
           uint32_t count, double timeout, int closing_ok, char **result, size_t *result_size)
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

void cd_start_fields(msgpack_sbuffer *buffer, msgpack_packer *packer)
{
    msgpack_sbuffer_init(buffer);
    msgpack_packer_init(packer, buffer, msgpack_sbuffer_write);
}

int cd_sync_upto(collectord_client *c, double timeout, int closing_ok)
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
    cd_start_fields(&fields, &packer);
    cd_pack_cstr(&packer, "session");
    cd_pack_cstr(&packer, c->session);
    cd_pack_cstr(&packer, "seq");
    msgpack_pack_uint64(&packer, seq);
    code = cd_ask(c, "sync", 1, &fields, 2, timeout, closing_ok, NULL, NULL);
    msgpack_sbuffer_destroy(&fields);
    return code;
}

int collectord_sync(collectord_client *client, double timeout)
{
    if (client == NULL) return cd_fail(NULL, COLLECTORD_E_ARGUMENT, "client is NULL");
    return cd_sync_upto(client, timeout, 0);
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
    unsigned char random[8];
    char stop_id[17];
    int index, code;
    if (c == NULL) return cd_fail(NULL, COLLECTORD_E_ARGUMENT, "client is NULL");
    if (reason != NULL && cd_check_utf8(reason, strlen(reason)) != 0)
        return cd_fail(c, COLLECTORD_E_ARGUMENT, "reason is not valid UTF-8");
    /* The stop's name: the link sends it again, with this id, to a daemon that
     * comes back before answering, which answers with the save it made. */
    if (cd_random(random, sizeof random) != 0)
        return cd_fail(c, COLLECTORD_E_INTERNAL, "no random source for the stop's id");
    for (index = 0; index < 8; index++) snprintf(stop_id + 2 * index, 3, "%02x", random[index]);
    cd_mutex_lock(&c->lock);
    seq = c->seq;
    cd_mutex_unlock(&c->lock);
    cd_start_fields(&fields, &packer);
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
    cd_pack_cstr(&packer, "stop_id");
    cd_pack_cstr(&packer, stop_id);
    code = cd_ask(c, "stop", CD_IF_STOP_IDS, &fields, 4, timeout, 0, &result, &result_size);
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
    if (cd_check_file_name(name, strlen(name), why, sizeof why) != 0)
        return cd_fail(c, COLLECTORD_E_ARGUMENT, "experiment name: %s", why);
    cd_start_fields(&fields, &packer);
    cd_pack_cstr(&packer, "name");
    cd_pack_cstr(&packer, name);
    cd_pack_cstr(&packer, "session");
    cd_pack_cstr(&packer, c->session);
    code = cd_ask(c, "name", 0, &fields, 2, timeout, 0, NULL, NULL);
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
    cd_start_fields(&fields, &packer);
    cd_pack_cstr(&packer, "node");
    cd_pack_cstr(&packer, node);
    cd_pack_cstr(&packer, "session");
    cd_pack_cstr(&packer, c->session);
    code = cd_ask(c, "restore", 1, &fields, 2, timeout, 0, &result, &result_size);
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
