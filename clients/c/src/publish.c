/* Publishing calls: check and encode in the caller's thread (so a bad value
 * fails at the call that sent it), take a sequence number and queue the
 * message for the I/O thread. They never wait for the network. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define BLOCK_BYTES (8u * 1024u * 1024u) /* most rows bytes one block carries */
#define MAX_COLUMNS 4096

/* A message whose body is `body` (copied to its exact size) and, for a block,
 * `rows` (copied). */
static int new_message(collectord_client *c, int kind, const cd_buf *body, const void *rows,
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
static int enqueue(collectord_client *c, cd_message *messages, size_t count)
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
static int publish(collectord_client *c, int kind, cd_buf *body)
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
        code = new_message(c, kind, body, NULL, 0, &message);
    cd_buf_free(body);
    if (code != COLLECTORD_OK) return code;
    return enqueue(c, message, 1);
}

static int check_call(collectord_client *c, const char *path)
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
 * packs the value, then calls publish(c, CD_PARAMS, body). */
static int begin_param(collectord_client *c, const char *path, const char *name, cd_buf *body,
                       msgpack_packer *packer)
{
    char why[CD_ERROR_BYTES];
    int code;
    if ((code = check_call(c, path)) != COLLECTORD_OK) return code;
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
    return publish(c, CD_PARAMS, &body);
}

int collectord_set_int(collectord_client *c, const char *path, const char *name, int64_t value)
{
    cd_buf body;
    msgpack_packer packer;
    int code = begin_param(c, path, name, &body, &packer);
    if (code != COLLECTORD_OK) return code;
    msgpack_pack_int64(&packer, value);
    return publish(c, CD_PARAMS, &body);
}

int collectord_set_bool(collectord_client *c, const char *path, const char *name, int value)
{
    cd_buf body;
    msgpack_packer packer;
    int code = begin_param(c, path, name, &body, &packer);
    if (code != COLLECTORD_OK) return code;
    if (value) msgpack_pack_true(&packer);
    else msgpack_pack_false(&packer);
    return publish(c, CD_PARAMS, &body);
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
    return publish(c, CD_PARAMS, &body);
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
    return publish(c, CD_PARAMS, &body);
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
    return publish(c, CD_PARAMS, &body);
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
    if ((code = check_call(c, path)) != COLLECTORD_OK) return code;
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
    return publish(c, CD_PARAMS, &body);
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
    int code = check_call(c, path);
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
    return publish(c, CD_DATA, &body);
}

int collectord_add_int(collectord_client *c, const char *path, int64_t value)
{
    cd_buf body;
    msgpack_packer packer;
    int code = begin_data(c, path, &body, &packer);
    if (code != COLLECTORD_OK) return code;
    msgpack_pack_int64(&packer, value);
    return publish(c, CD_DATA, &body);
}

int collectord_add_bool(collectord_client *c, const char *path, int value)
{
    cd_buf body;
    msgpack_packer packer;
    int code = begin_data(c, path, &body, &packer);
    if (code != COLLECTORD_OK) return code;
    if (value) msgpack_pack_true(&packer);
    else msgpack_pack_false(&packer);
    return publish(c, CD_DATA, &body);
}

int collectord_add_text(collectord_client *c, const char *path, const char *text, size_t length)
{
    cd_buf body;
    msgpack_packer packer;
    int code = check_text(c, text, length);
    if (code == COLLECTORD_OK) code = begin_data(c, path, &body, &packer);
    if (code != COLLECTORD_OK) return code;
    cd_pack_text(&packer, length ? text : "", length);
    return publish(c, CD_DATA, &body);
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
    return publish(c, CD_DATA, &body);
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
    return publish(c, CD_DATA, &body);
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
    return publish(c, CD_DATA, &body);
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
    return publish(c, CD_DATA, &body);
}

/* -- streams ---------------------------------------------------------------------- */

/* The dtype's canonical numpy string and item size; -1 if not a stream dtype. */
static int stream_dtype(const char *dtype, const char **canonical, size_t *itemsize)
{
    static const char *const names[] = {"|b1", "|i1", "|u1", "<i2", "<i4", "<i8",
                                        "<u2", "<u4", "<u8", "<f2", "<f4", "<f8"};
    static const size_t sizes[] = {1, 1, 1, 2, 4, 8, 2, 4, 8, 2, 4, 8};
    size_t index;
    if (dtype == NULL) return -1;
    for (index = 0; index < sizeof sizes / sizeof sizes[0]; index++) {
        const char *name = names[index];
        /* One-byte types may be written with '<' too, as numpy accepts them. */
        if (strcmp(dtype, name) == 0 || (name[0] == '|' && dtype[0] == '<' && strcmp(dtype + 1, name + 1) == 0)) {
            *canonical = name;
            *itemsize = sizes[index];
            return 0;
        }
    }
    return -1;
}

static int ends_with(const char *text, size_t length, const char *suffix)
{
    size_t suffix_length = strlen(suffix);
    return length >= suffix_length && memcmp(text + length - suffix_length, suffix, suffix_length) == 0;
}

static int check_stream_path(collectord_client *c, const char *path)
{
    static const char *const suffixes[] = {".npy", ".csv", ".h5", ".parquet", ".feather"};
    const char *start = path, *end;
    size_t index;
    while ((end = strchr(start, '/')) != NULL) {
        for (index = 0; index < sizeof suffixes / sizeof suffixes[0]; index++)
            if (ends_with(start, (size_t)(end - start), suffixes[index]))
                return cd_fail(c, COLLECTORD_E_ARGUMENT,
                               "stream path '%s': the folder name '%.*s' ends like a stream file",
                               path, (int)(end - start), start);
        start = end + 1;
    }
    return COLLECTORD_OK;
}

static int check_column(collectord_client *c, const char *path, const char *column, size_t length)
{
    size_t index;
    if (length == 0)
        return cd_fail(c, COLLECTORD_E_ARGUMENT, "stream '%s': a column name is empty", path);
    if (cd_check_utf8(column, length) != 0)
        return cd_fail(c, COLLECTORD_E_ARGUMENT, "stream '%s': a column name is not UTF-8", path);
    for (index = 0; index < length; index++) {
        unsigned char byte = (unsigned char)column[index];
        /* Control characters (Cc): C0, DEL, and C1 (U+0080..U+009F = C2 80..C2 9F). */
        if (byte < 0x20 || byte == 0x7F
            || (byte == 0xC2 && index + 1 < length && (unsigned char)column[index + 1] <= 0x9F))
            return cd_fail(c, COLLECTORD_E_ARGUMENT,
                           "stream '%s': column name '%.*s' holds a control character", path,
                           (int)length, column);
    }
    return COLLECTORD_OK;
}

/* Declare from a msgpack array of columns (and units): checked, recorded, queued. */
static int declare(collectord_client *c, const char *path, const msgpack_object *columns,
                   const char *dtype, const msgpack_object *units)
{
    const char *canonical;
    size_t itemsize, index, other;
    cd_buf body;
    msgpack_packer packer;
    cd_stream *streams;
    char *copy;
    int code;
    if ((code = check_call(c, path)) != COLLECTORD_OK) return code;
    if ((code = check_stream_path(c, path)) != COLLECTORD_OK) return code;
    if (stream_dtype(dtype, &canonical, &itemsize) != 0)
        return cd_fail(c, COLLECTORD_E_ARGUMENT,
                       "stream '%s': dtype '%s' is not a little-endian bool, int, uint or float "
                       "of 1 to 8 bytes",
                       path, dtype ? dtype : "(NULL)");
    if (columns->type != MSGPACK_OBJECT_ARRAY || columns->via.array.size == 0
        || columns->via.array.size > MAX_COLUMNS)
        return cd_fail(c, COLLECTORD_E_ARGUMENT, "stream '%s': 1 to %d columns are needed", path,
                       MAX_COLUMNS);
    for (index = 0; index < columns->via.array.size; index++) {
        const msgpack_object *column = &columns->via.array.ptr[index];
        if (column->type != MSGPACK_OBJECT_STR)
            return cd_fail(c, COLLECTORD_E_ARGUMENT, "stream '%s': column names must be text", path);
        if ((code = check_column(c, path, column->via.str.ptr, column->via.str.size)) != 0) return code;
        for (other = 0; other < index; other++) {
            const msgpack_object *before = &columns->via.array.ptr[other];
            if (before->via.str.size == column->via.str.size
                && memcmp(before->via.str.ptr, column->via.str.ptr, column->via.str.size) == 0)
                return cd_fail(c, COLLECTORD_E_ARGUMENT, "stream '%s': column '%.*s' appears twice",
                               path, (int)column->via.str.size, column->via.str.ptr);
        }
    }
    if (units != NULL) {
        if (units->type != MSGPACK_OBJECT_ARRAY || units->via.array.size != columns->via.array.size)
            return cd_fail(c, COLLECTORD_E_ARGUMENT, "stream '%s': give one unit per column", path);
        for (index = 0; index < units->via.array.size; index++)
            if (units->via.array.ptr[index].type != MSGPACK_OBJECT_STR)
                return cd_fail(c, COLLECTORD_E_ARGUMENT, "stream '%s': units must be text", path);
    }
    copy = malloc(strlen(path) + 1);
    if (copy == NULL) return cd_fail(c, COLLECTORD_E_MEMORY, "out of memory");
    strcpy(copy, path);
    cd_buf_init(&body);
    msgpack_packer_init(&packer, &body, cd_buf_write);
    msgpack_pack_map(&packer, units != NULL ? 4 : 3);
    cd_pack_cstr(&packer, "path");
    cd_pack_cstr(&packer, path);
    cd_pack_cstr(&packer, "columns");
    msgpack_pack_object(&packer, *columns);
    cd_pack_cstr(&packer, "dtype");
    cd_pack_cstr(&packer, canonical);
    if (units != NULL) {
        cd_pack_cstr(&packer, "units");
        msgpack_pack_object(&packer, *units);
    }
    /* Record the stream (or its new shape) before the declaration goes out. */
    cd_mutex_lock(&c->lock);
    for (index = 0; index < c->stream_count; index++)
        if (strcmp(c->streams[index].path, path) == 0) break;
    if (index == c->stream_count) {
        streams = realloc(c->streams, (c->stream_count + 1) * sizeof *streams);
        if (streams == NULL) {
            cd_mutex_unlock(&c->lock);
            free(copy);
            cd_buf_free(&body);
            return cd_fail(c, COLLECTORD_E_MEMORY, "out of memory");
        }
        c->streams = streams;
        c->stream_count++;
    } else {
        free(c->streams[index].path);
    }
    c->streams[index].path = copy;
    c->streams[index].columns = columns->via.array.size;
    c->streams[index].itemsize = itemsize;
    cd_mutex_unlock(&c->lock);
    return publish(c, CD_STREAM, &body);
}

/* Strings as a msgpack array, unpacked into `unpacked`. */
static int strings_object(collectord_client *c, const char *const *texts, size_t count,
                          const char *what, msgpack_sbuffer *buffer, msgpack_unpacked *unpacked)
{
    msgpack_packer packer;
    size_t index, offset = 0;
    msgpack_packer_init(&packer, buffer, msgpack_sbuffer_write);
    msgpack_pack_array(&packer, count);
    for (index = 0; index < count; index++) {
        if (texts[index] == NULL) return cd_fail(c, COLLECTORD_E_ARGUMENT, "%s %zu is NULL", what, index);
        if (cd_check_utf8(texts[index], strlen(texts[index])) != 0)
            return cd_fail(c, COLLECTORD_E_ARGUMENT, "%s %zu is not UTF-8", what, index);
        cd_pack_cstr(&packer, texts[index]);
    }
    if (msgpack_unpack_next(unpacked, buffer->data, buffer->size, &offset) != MSGPACK_UNPACK_SUCCESS)
        return cd_fail(c, COLLECTORD_E_INTERNAL, "cannot read back the %s", what);
    return COLLECTORD_OK;
}

int collectord_declare_stream(collectord_client *c, const char *path, const char *const *columns,
                              size_t column_count, const char *dtype, const char *const *units)
{
    msgpack_sbuffer column_buffer, unit_buffer;
    msgpack_unpacked column_object, unit_object;
    int code;
    if (c == NULL) return cd_fail(NULL, COLLECTORD_E_ARGUMENT, "client is NULL");
    if (columns == NULL) return cd_fail(c, COLLECTORD_E_ARGUMENT, "columns is NULL");
    if (column_count == 0 || column_count > MAX_COLUMNS)
        return cd_fail(c, COLLECTORD_E_ARGUMENT, "stream '%s': 1 to %d columns are needed",
                       path ? path : "", MAX_COLUMNS);
    msgpack_sbuffer_init(&column_buffer);
    msgpack_sbuffer_init(&unit_buffer);
    msgpack_unpacked_init(&column_object);
    msgpack_unpacked_init(&unit_object);
    code = strings_object(c, columns, column_count, "column", &column_buffer, &column_object);
    if (code == COLLECTORD_OK && units != NULL)
        code = strings_object(c, units, column_count, "unit", &unit_buffer, &unit_object);
    if (code == COLLECTORD_OK)
        code = declare(c, path, &column_object.data, dtype, units ? &unit_object.data : NULL);
    msgpack_unpacked_destroy(&column_object);
    msgpack_unpacked_destroy(&unit_object);
    msgpack_sbuffer_destroy(&column_buffer);
    msgpack_sbuffer_destroy(&unit_buffer);
    return code;
}

static int json_array(collectord_client *c, const char *json, const char *what,
                      msgpack_sbuffer *buffer, msgpack_unpacked *unpacked)
{
    char why[CD_ERROR_BYTES];
    size_t offset = 0;
    if (json == NULL) return cd_fail(c, COLLECTORD_E_ARGUMENT, "%s is NULL", what);
    msgpack_packer packer;
    msgpack_packer_init(&packer, buffer, msgpack_sbuffer_write);
    if (cd_json_to_msgpack(json, strlen(json), 2, &packer, why, sizeof why) != 0)
        return cd_fail(c, COLLECTORD_E_JSON, "%s: %s", what, why);
    msgpack_unpack_next(unpacked, buffer->data, buffer->size, &offset);
    if (unpacked->data.type != MSGPACK_OBJECT_ARRAY)
        return cd_fail(c, COLLECTORD_E_ARGUMENT, "%s must be a JSON array of strings", what);
    return COLLECTORD_OK;
}

int collectord_declare_stream_json(collectord_client *c, const char *path,
                                   const char *columns_json, const char *dtype,
                                   const char *units_json)
{
    msgpack_sbuffer column_buffer, unit_buffer;
    msgpack_unpacked column_object, unit_object;
    int code;
    if (c == NULL) return cd_fail(NULL, COLLECTORD_E_ARGUMENT, "client is NULL");
    msgpack_sbuffer_init(&column_buffer);
    msgpack_sbuffer_init(&unit_buffer);
    msgpack_unpacked_init(&column_object);
    msgpack_unpacked_init(&unit_object);
    code = json_array(c, columns_json, "columns", &column_buffer, &column_object);
    if (code == COLLECTORD_OK && units_json != NULL)
        code = json_array(c, units_json, "units", &unit_buffer, &unit_object);
    if (code == COLLECTORD_OK)
        code = declare(c, path, &column_object.data, dtype, units_json ? &unit_object.data : NULL);
    msgpack_unpacked_destroy(&column_object);
    msgpack_unpacked_destroy(&unit_object);
    msgpack_sbuffer_destroy(&column_buffer);
    msgpack_sbuffer_destroy(&unit_buffer);
    return code;
}

int collectord_append_rows(collectord_client *c, const char *path, const void *rows,
                           uint64_t row_count, size_t length)
{
    size_t index, row_bytes = 0, per_block;
    uint64_t limit, done;
    cd_message *head = NULL, *tail = NULL;
    size_t count = 0;
    int code;
    if ((code = check_call(c, path)) != COLLECTORD_OK) return code;
    if (rows == NULL || row_count == 0)
        return cd_fail(c, COLLECTORD_E_ARGUMENT, "stream '%s': no rows given", path);
    cd_mutex_lock(&c->lock);
    for (index = 0; index < c->stream_count; index++)
        if (strcmp(c->streams[index].path, path) == 0) {
            row_bytes = c->streams[index].columns * c->streams[index].itemsize;
            break;
        }
    limit = c->body_limit;
    cd_mutex_unlock(&c->lock);
    if (row_bytes == 0)
        return cd_fail(c, COLLECTORD_E_ARGUMENT, "stream '%s' was not declared by this client", path);
    if (row_count > SIZE_MAX / row_bytes || (uint64_t)length != row_count * row_bytes)
        return cd_fail(c, COLLECTORD_E_ARGUMENT,
                       "stream '%s': %llu rows of %zu bytes are %llu bytes, not %zu", path,
                       (unsigned long long)row_count, row_bytes,
                       (unsigned long long)(row_count * row_bytes), length);
    /* A block's body is {"path", "rows"}: room for it beside the rows. */
    per_block = (size_t)((limit > BLOCK_BYTES ? BLOCK_BYTES : (limit > 512 + strlen(path) ? limit - 512 - strlen(path) : 0)) / row_bytes);
    if (per_block == 0)
        return cd_fail(c, COLLECTORD_E_TOO_LARGE, "stream '%s': one row is larger than the daemon accepts", path);
    for (done = 0; done < row_count;) {
        uint64_t take = row_count - done < per_block ? row_count - done : per_block;
        cd_buf body;
        msgpack_packer packer;
        cd_message *message;
        cd_buf_init(&body);
        msgpack_packer_init(&packer, &body, cd_buf_write);
        msgpack_pack_map(&packer, 2);
        cd_pack_cstr(&packer, "path");
        cd_pack_cstr(&packer, path);
        cd_pack_cstr(&packer, "rows");
        msgpack_pack_uint64(&packer, take);
        code = body.failed ? cd_fail(c, COLLECTORD_E_MEMORY, "out of memory")
                           : new_message(c, CD_BLOCK, &body, (const char *)rows + done * row_bytes,
                                         (size_t)take * row_bytes, &message);
        cd_buf_free(&body);
        if (code != COLLECTORD_OK) {
            while ((message = head) != NULL) {
                head = message->next;
                cd_message_free(message);
            }
            return code;
        }
        if (tail) tail->next = message;
        else head = message;
        tail = message;
        count++;
        done += take;
    }
    return enqueue(c, head, count);
}
