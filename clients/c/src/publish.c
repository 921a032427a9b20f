/* Publishing calls: check and encode in the caller's thread (so a bad value
 * fails at the call that sent it), take a sequence number and queue the
 * message for the I/O thread. They never wait for the network. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"


/* A message whose body is `body` (copied to its exact size) and, for a block,
 * `rows` (copied). */
int cd_new_message(collectord_client *c, int kind, const cd_buf *body, const void *rows,
                       size_t rows_size, cd_message **out)
{
    cd_message *message = calloc(1, sizeof *message);
    if (message == NULL || (message->body = malloc(body->size)) == NULL) {
        free(message);
        return cd_fail(c, COLLECTORD_E_MEMORY, "out of memory");
    }
    memcpy(message->body, body->data, body->size);
    message->body_size = body->size;
    message->kind = kind;
    if (rows_size) {
        message->rows = malloc(rows_size);
        if (message->rows == NULL) {
            cd_message_free(message);
            return cd_fail(c, COLLECTORD_E_MEMORY, "out of memory");
        }
        memcpy(message->rows, rows, rows_size);
        message->rows_size = rows_size;
    }
    *out = message;
    return COLLECTORD_OK;
}

/* Number and queue `messages` (a chain of `count`), all or none. */
int cd_enqueue(collectord_client *c, cd_message *messages, size_t count)
{
    cd_message *message, *last = NULL;
    cd_mutex_lock(&c->lock);
    if (c->state != CD_OPEN) {
        cd_mutex_unlock(&c->lock);
        while ((message = messages) != NULL) {
            messages = message->next;
            cd_message_free(message);
        }
        return cd_fail(c, COLLECTORD_E_CLOSED, "client '%s' is closed", c->name);
    }
    for (message = messages; message != NULL; message = message->next) {
        message->seq = ++c->seq;
        last = message;
    }
    if (c->outbox_tail) c->outbox_tail->next = messages;
    else c->outbox_head = messages;
    c->outbox_tail = last;
    c->outbox_count += count;
    cd_wake(c);
    cd_mutex_unlock(&c->lock);
    return COLLECTORD_OK;
}

/* Queue the message whose body is in `body`, and free `body`. */
int cd_publish(collectord_client *c, int kind, cd_buf *body)
{
    cd_message *message;
    uint64_t limit;
    int code;
    cd_mutex_lock(&c->lock);
    limit = c->body_limit;
    cd_mutex_unlock(&c->lock);
    if (body->failed)
        code = cd_fail(c, COLLECTORD_E_MEMORY, "out of memory");
    else if (body->size > limit)
        code = cd_fail(c, COLLECTORD_E_TOO_LARGE,
                       "the message is %zu bytes; the daemon accepts at most %llu", body->size,
                       (unsigned long long)limit);
    else
        code = cd_new_message(c, kind, body, NULL, 0, &message);
    cd_buf_free(body);
    if (code != COLLECTORD_OK) return code;
    return cd_enqueue(c, message, 1);
}

int cd_check_call(collectord_client *c, const char *path)
{
    char why[CD_ERROR_BYTES];
    if (c == NULL) return cd_fail(NULL, COLLECTORD_E_ARGUMENT, "client is NULL");
    if (cd_check_path(path, why, sizeof why) != 0)
        return cd_fail(c, COLLECTORD_E_ARGUMENT, "%s", why);
    return COLLECTORD_OK;
}

static int check_text(collectord_client *c, const char *text, size_t length)
{
    if (text == NULL && length > 0) return cd_fail(c, COLLECTORD_E_ARGUMENT, "text is NULL");
    if (length > 0 && cd_check_utf8(text, length) != 0)
        return cd_fail(c, COLLECTORD_E_ARGUMENT, "text is not valid UTF-8");
    return COLLECTORD_OK;
}

static void begin_body(cd_buf *body, msgpack_packer *packer, const char *path, const char *field)
{
    cd_buf_init(body);
    msgpack_packer_init(packer, body, cd_buf_write);
    msgpack_pack_map(packer, 2);
    cd_pack_cstr(packer, "path");
    cd_pack_cstr(packer, path);
    cd_pack_cstr(packer, field);
}

/* -- parameters ------------------------------------------------------------------ */

/* Check, and start the body {"path": path, "values": {name: ...}}: the caller
 * packs the value, then calls cd_publish(c, CD_PARAMS, body). */
static int begin_param(collectord_client *c, const char *path, const char *name, cd_buf *body,
                       msgpack_packer *packer)
{
    char why[CD_ERROR_BYTES];
    int code;
    if ((code = cd_check_call(c, path)) != COLLECTORD_OK) return code;
    if (name == NULL) return cd_fail(c, COLLECTORD_E_ARGUMENT, "parameter name is NULL");
    if (cd_check_name(name, strlen(name), why, sizeof why) != 0)
        return cd_fail(c, COLLECTORD_E_ARGUMENT, "parameter of '%s': %s", path, why);
    begin_body(body, packer, path, "values");
    msgpack_pack_map(packer, 1);
    cd_pack_cstr(packer, name);
    return COLLECTORD_OK;
}

int collectord_set_float(collectord_client *c, const char *path, const char *name, double value)
{
    cd_buf body;
    msgpack_packer packer;
    int code = begin_param(c, path, name, &body, &packer);
    if (code != COLLECTORD_OK) return code;
    msgpack_pack_double(&packer, value);
    return cd_publish(c, CD_PARAMS, &body);
}

int collectord_set_int(collectord_client *c, const char *path, const char *name, int64_t value)
{
    cd_buf body;
    msgpack_packer packer;
    int code = begin_param(c, path, name, &body, &packer);
    if (code != COLLECTORD_OK) return code;
    msgpack_pack_int64(&packer, value);
    return cd_publish(c, CD_PARAMS, &body);
}

int collectord_set_bool(collectord_client *c, const char *path, const char *name, int value)
{
    cd_buf body;
    msgpack_packer packer;
    int code = begin_param(c, path, name, &body, &packer);
    if (code != COLLECTORD_OK) return code;
    if (value) msgpack_pack_true(&packer);
    else msgpack_pack_false(&packer);
    return cd_publish(c, CD_PARAMS, &body);
}

int collectord_set_text(collectord_client *c, const char *path, const char *name,
                        const char *text, size_t length)
{
    cd_buf body;
    msgpack_packer packer;
    int code = check_text(c, text, length);
    if (code == COLLECTORD_OK) code = begin_param(c, path, name, &body, &packer);
    if (code != COLLECTORD_OK) return code;
    cd_pack_text(&packer, length ? text : "", length);
    return cd_publish(c, CD_PARAMS, &body);
}

int collectord_set_msgpack(collectord_client *c, const char *path, const char *name,
                           const void *bytes, size_t length)
{
    char why[CD_ERROR_BYTES];
    cd_buf body;
    msgpack_packer packer;
    int code;
    if (cd_check_value(bytes, length, CD_PARAM_DEPTH, why, sizeof why) != 0)
        return cd_fail(c, COLLECTORD_E_MSGPACK, "value of '%s': %s", name ? name : "", why);
    if ((code = begin_param(c, path, name, &body, &packer)) != COLLECTORD_OK) return code;
    cd_buf_write(&body, bytes, length);
    return cd_publish(c, CD_PARAMS, &body);
}

int collectord_set_json(collectord_client *c, const char *path, const char *name,
                        const char *json, size_t length)
{
    char why[CD_ERROR_BYTES];
    cd_buf body;
    msgpack_packer packer;
    int code = begin_param(c, path, name, &body, &packer);
    if (code != COLLECTORD_OK) return code;
    if (cd_json_to_msgpack(json, length, CD_PARAM_DEPTH, &packer, why, sizeof why) != 0) {
        cd_buf_free(&body);
        return cd_fail(c, COLLECTORD_E_JSON, "value of '%s': %s", name, why);
    }
    return cd_publish(c, CD_PARAMS, &body);
}

/* A whole map of parameters, as msgpack: every key a valid name. */
static int publish_params_map(collectord_client *c, const char *path, const char *bytes,
                              size_t length)
{
    msgpack_unpacked unpacked;
    char why[CD_ERROR_BYTES];
    size_t offset = 0;
    uint32_t index;
    cd_buf body;
    msgpack_packer packer;
    int code;
    if ((code = cd_check_call(c, path)) != COLLECTORD_OK) return code;
    if (cd_check_value(bytes, length, CD_PARAM_DEPTH + 1, why, sizeof why) != 0)
        return cd_fail(c, COLLECTORD_E_MSGPACK, "parameters of '%s': %s", path, why);
    msgpack_unpacked_init(&unpacked);
    msgpack_unpack_next(&unpacked, bytes, length, &offset);
    if (unpacked.data.type != MSGPACK_OBJECT_MAP) {
        msgpack_unpacked_destroy(&unpacked);
        return cd_fail(c, COLLECTORD_E_ARGUMENT, "parameters of '%s' must be a map", path);
    }
    for (index = 0; index < unpacked.data.via.map.size; index++) {
        const msgpack_object *key = &unpacked.data.via.map.ptr[index].key;
        if (cd_check_name(key->via.str.ptr, key->via.str.size, why, sizeof why) != 0) {
            msgpack_unpacked_destroy(&unpacked);
            return cd_fail(c, COLLECTORD_E_ARGUMENT, "parameter of '%s': %s", path, why);
        }
    }
    msgpack_unpacked_destroy(&unpacked);
    begin_body(&body, &packer, path, "values");
    cd_buf_write(&body, bytes, length);
    return cd_publish(c, CD_PARAMS, &body);
}

int collectord_set_params_msgpack(collectord_client *c, const char *path, const void *bytes,
                                  size_t length)
{
    return publish_params_map(c, path, bytes, length);
}

int collectord_set_params_json(collectord_client *c, const char *path, const char *json,
                               size_t length)
{
    char why[CD_ERROR_BYTES];
    cd_buf map;
    msgpack_packer packer;
    int code;
    cd_buf_init(&map);
    msgpack_packer_init(&packer, &map, cd_buf_write);
    if (cd_json_to_msgpack(json, length, CD_PARAM_DEPTH + 1, &packer, why, sizeof why) != 0) {
        cd_buf_free(&map);
        return cd_fail(c, COLLECTORD_E_JSON, "parameters of '%s': %s", path ? path : "", why);
    }
    code = map.failed ? cd_fail(c, COLLECTORD_E_MEMORY, "out of memory")
                      : publish_params_map(c, path, map.data, map.size);
    cd_buf_free(&map);
    return code;
}

/* -- static data ------------------------------------------------------------------ */

/* Check, and start the body {"path": path, "value": ...}. */
static int begin_data(collectord_client *c, const char *path, cd_buf *body,
                      msgpack_packer *packer)
{
    int code = cd_check_call(c, path);
    if (code != COLLECTORD_OK) return code;
    begin_body(body, packer, path, "value");
    return COLLECTORD_OK;
}

int collectord_add_float(collectord_client *c, const char *path, double value)
{
    cd_buf body;
    msgpack_packer packer;
    int code = begin_data(c, path, &body, &packer);
    if (code != COLLECTORD_OK) return code;
    msgpack_pack_double(&packer, value);
    return cd_publish(c, CD_DATA, &body);
}

int collectord_add_int(collectord_client *c, const char *path, int64_t value)
{
    cd_buf body;
    msgpack_packer packer;
    int code = begin_data(c, path, &body, &packer);
    if (code != COLLECTORD_OK) return code;
    msgpack_pack_int64(&packer, value);
    return cd_publish(c, CD_DATA, &body);
}

int collectord_add_bool(collectord_client *c, const char *path, int value)
{
    cd_buf body;
    msgpack_packer packer;
    int code = begin_data(c, path, &body, &packer);
    if (code != COLLECTORD_OK) return code;
    if (value) msgpack_pack_true(&packer);
    else msgpack_pack_false(&packer);
    return cd_publish(c, CD_DATA, &body);
}

int collectord_add_text(collectord_client *c, const char *path, const char *text, size_t length)
{
    cd_buf body;
    msgpack_packer packer;
    int code = check_text(c, text, length);
    if (code == COLLECTORD_OK) code = begin_data(c, path, &body, &packer);
    if (code != COLLECTORD_OK) return code;
    cd_pack_text(&packer, length ? text : "", length);
    return cd_publish(c, CD_DATA, &body);
}

int collectord_add_floats(collectord_client *c, const char *path, const double *values,
                          size_t count)
{
    cd_buf body;
    msgpack_packer packer;
    size_t index;
    int code;
    if (values == NULL && count > 0) return cd_fail(c, COLLECTORD_E_ARGUMENT, "values is NULL");
    if ((code = begin_data(c, path, &body, &packer)) != COLLECTORD_OK) return code;
    msgpack_pack_array(&packer, count);
    for (index = 0; index < count; index++) msgpack_pack_double(&packer, values[index]);
    return cd_publish(c, CD_DATA, &body);
}

int collectord_add_ints(collectord_client *c, const char *path, const int64_t *values,
                        size_t count)
{
    cd_buf body;
    msgpack_packer packer;
    size_t index;
    int code;
    if (values == NULL && count > 0) return cd_fail(c, COLLECTORD_E_ARGUMENT, "values is NULL");
    if ((code = begin_data(c, path, &body, &packer)) != COLLECTORD_OK) return code;
    msgpack_pack_array(&packer, count);
    for (index = 0; index < count; index++) msgpack_pack_int64(&packer, values[index]);
    return cd_publish(c, CD_DATA, &body);
}

int collectord_add_msgpack(collectord_client *c, const char *path, const void *bytes,
                           size_t length)
{
    char why[CD_ERROR_BYTES];
    cd_buf body;
    msgpack_packer packer;
    int code;
    if (cd_check_value(bytes, length, CD_DATA_DEPTH, why, sizeof why) != 0)
        return cd_fail(c, COLLECTORD_E_MSGPACK, "value of '%s': %s", path ? path : "", why);
    if ((code = begin_data(c, path, &body, &packer)) != COLLECTORD_OK) return code;
    cd_buf_write(&body, bytes, length);
    return cd_publish(c, CD_DATA, &body);
}

int collectord_add_json(collectord_client *c, const char *path, const char *json, size_t length)
{
    char why[CD_ERROR_BYTES];
    cd_buf body;
    msgpack_packer packer;
    int code = begin_data(c, path, &body, &packer);
    if (code != COLLECTORD_OK) return code;
    if (cd_json_to_msgpack(json, length, CD_DATA_DEPTH, &packer, why, sizeof why) != 0) {
        cd_buf_free(&body);
        return cd_fail(c, COLLECTORD_E_JSON, "value of '%s': %s", path, why);
    }
    return cd_publish(c, CD_DATA, &body);
}
