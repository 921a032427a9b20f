/* Values a caller hands over as msgpack bytes, checked against what the
 * daemon accepts (docs/protocol.md, "Values"), so that a bad value fails at
 * the call instead of being counted as a rejection at the daemon. */
#include <stdio.h>
#include <string.h>

#include "internal.h"

/* The first and last seconds since 1970 of the years 0001 to 9999. */
#define TIMESTAMP_FIRST_SECOND (-62135596800LL)
#define TIMESTAMP_LAST_SECOND 253402300799LL

static uint64_t big_endian(const unsigned char *bytes, size_t size)
{
    uint64_t value = 0;
    size_t index;
    for (index = 0; index < size; index++) value = (value << 8) | bytes[index];
    return value;
}

static const char *type_name(msgpack_object_type type)
{
    switch (type) {
    case MSGPACK_OBJECT_NIL: return "nil";
    case MSGPACK_OBJECT_BOOLEAN: return "bool";
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return "int";
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: return "float";
    case MSGPACK_OBJECT_STR: return "str";
    case MSGPACK_OBJECT_BIN: return "bin";
    case MSGPACK_OBJECT_ARRAY: return "array";
    case MSGPACK_OBJECT_MAP: return "map";
    case MSGPACK_OBJECT_EXT: return "ext";
    default: return "unknown";
    }
}

/* The ext types of protocol.md: 1 a .npy file (its magic and header length
 * checked here; its dtype, shape and data by the daemon), 2 UTF-8 text, -1 a
 * msgpack timestamp within the years 0001 to 9999. */
static int check_ext(int8_t type, const unsigned char *data, uint32_t size, char *why,
                     size_t why_size)
{
    if (type == 1) {
        uint64_t header = 0;
        size_t field = size >= 8 && data[6] == 1 ? 2 : 4;
        if (size < 8 || memcmp(data, "\x93NUMPY", 6) != 0 || data[6] < 1 || data[6] > 3
            || size < 8 + field) {
            snprintf(why, why_size, "ext 1 is not a .npy array (no NUMPY magic and version)");
            return -1;
        }
        header = data[8] | (uint64_t)data[9] << 8;
        if (field == 4) header |= (uint64_t)data[10] << 16 | (uint64_t)data[11] << 24;
        if (header > size - 8 - field) {
            snprintf(why, why_size, "ext 1: the .npy header is cut short");
            return -1;
        }
        return 0;
    }
    if (type == 2) {
        if (cd_check_utf8((const char *)data, size) == 0) return 0;
        snprintf(why, why_size, "ext 2 is not UTF-8 text");
        return -1;
    }
    if (type == -1) {
        uint64_t nanoseconds = 0;
        int64_t seconds = 0;
        if (size == 4) return 0; /* seconds since 1970 as uint32: 1970 to 2106 */
        if (size == 8) nanoseconds = big_endian(data, 4) >> 2; /* seconds < 2^34: before 2514 */
        if (size == 12) {
            nanoseconds = big_endian(data, 4);
            seconds = (int64_t)big_endian(data + 4, 8);
        }
        if (size != 8 && size != 12) {
            snprintf(why, why_size, "a msgpack timestamp of %u bytes (4, 8 or 12 expected)",
                     (unsigned)size);
            return -1;
        }
        if (nanoseconds > 999999999) {
            snprintf(why, why_size, "a msgpack timestamp with %llu nanoseconds",
                     (unsigned long long)nanoseconds);
            return -1;
        }
        if (seconds < TIMESTAMP_FIRST_SECOND || seconds > TIMESTAMP_LAST_SECOND) {
            snprintf(why, why_size,
                     "msgpack timestamp of %lld s since 1970 is outside the years 0001 to 9999",
                     (long long)seconds);
            return -1;
        }
        return 0;
    }
    snprintf(why, why_size, "unknown msgpack ext type %d", (int)type);
    return -1;
}

static int check(const msgpack_object *value, int depth, char *why, size_t why_size)
{
    uint32_t index;
    switch (value->type) {
    case MSGPACK_OBJECT_STR:
        if (cd_check_utf8(value->via.str.ptr, value->via.str.size) != 0) {
            snprintf(why, why_size, "a str is not valid UTF-8");
            return -1;
        }
        return 0;
    case MSGPACK_OBJECT_EXT:
        return check_ext(value->via.ext.type, (const unsigned char *)value->via.ext.ptr,
                         value->via.ext.size, why, why_size);
    case MSGPACK_OBJECT_ARRAY:
    case MSGPACK_OBJECT_MAP:
        if (depth == 0) {
            snprintf(why, why_size, "the value is nested too deep");
            return -1;
        }
        break;
    default:
        return 0;
    }
    if (value->type == MSGPACK_OBJECT_ARRAY) {
        for (index = 0; index < value->via.array.size; index++)
            if (check(&value->via.array.ptr[index], depth - 1, why, why_size) != 0) return -1;
        return 0;
    }
    for (index = 0; index < value->via.map.size; index++) {
        const msgpack_object *key = &value->via.map.ptr[index].key;
        if (key->type != MSGPACK_OBJECT_STR) {
            snprintf(why, why_size, "map keys must be str, not %s", type_name(key->type));
            return -1;
        }
        if (check(key, depth, why, why_size) != 0) return -1;
        if (key->via.str.size > 0 && key->via.str.ptr[0] == '$') {
            snprintf(why, why_size, "map key '%.*s' starts with '$', kept for collectord's tags",
                     (int)(key->via.str.size > 60 ? 60 : key->via.str.size), key->via.str.ptr);
            return -1;
        }
        if (check(&value->via.map.ptr[index].val, depth - 1, why, why_size) != 0) return -1;
    }
    return 0;
}


/* Whether every container in `bytes` declares no more elements than there are
 * bytes left to hold them, checked before msgpack-c's unpacker sees them: it
 * allocates room for a container's elements when it reads the count, so five
 * bytes declaring an array of 2^32 elements would ask for 100 GB. This reads
 * only the msgpack format's type bytes and lengths; msgpack-c decodes. */
static int plausible(const unsigned char *bytes, size_t length, char *why, size_t why_size)
{
    size_t at = 0;
    uint64_t pending = 1; /* values still to read */
    while (pending > 0) {
        unsigned char type;
        uint64_t skip = 0, elements = 0; /* bytes after the type byte; values inside */
        size_t start = at;
        if (at >= length) return 0;      /* cut short: msgpack-c says so */
        type = bytes[at++];
        if (type <= 0x7f || type >= 0xe0 || type == 0xc0 || type == 0xc2 || type == 0xc3) skip = 0;
        else if (type <= 0x8f) elements = 2 * (uint64_t)(type & 0x0f);
        else if (type <= 0x9f) elements = type & 0x0f;
        else if (type <= 0xbf) skip = type & 0x1f;
        else {
            /* size of the length field, fixed extra bytes, elements per count */
            size_t field = 0, extra = 0;
            uint64_t per = 0;
            switch (type) {
            case 0xc4: case 0xd9: field = 1; break;
            case 0xc5: case 0xda: field = 2; break;
            case 0xc6: case 0xdb: field = 4; break;
            case 0xc7: field = 1; extra = 1; break;
            case 0xc8: field = 2; extra = 1; break;
            case 0xc9: field = 4; extra = 1; break;
            case 0xca: extra = 4; break;
            case 0xcb: extra = 8; break;
            case 0xcc: case 0xd0: extra = 1; break;
            case 0xcd: case 0xd1: extra = 2; break;
            case 0xce: case 0xd2: extra = 4; break;
            case 0xcf: case 0xd3: extra = 8; break;
            case 0xd4: extra = 2; break;
            case 0xd5: extra = 3; break;
            case 0xd6: extra = 5; break;
            case 0xd7: extra = 9; break;
            case 0xd8: extra = 17; break;
            case 0xdc: field = 2; per = 1; break;
            case 0xdd: field = 4; per = 1; break;
            case 0xde: field = 2; per = 2; break;
            case 0xdf: field = 4; per = 2; break;
            default: return 0; /* 0xc1, never used: msgpack-c refuses it */
            }
            if (length - at < field) return 0;
            if (per) elements = per * big_endian(bytes + at, field);
            else skip = big_endian(bytes + at, field) + extra;
            at += field;
        }
        if (elements > length - at || skip > length - at) {
            snprintf(why, why_size, "the msgpack %s at byte %zu claims %llu %s; %zu bytes follow",
                     elements ? "container" : "value", start,
                     (unsigned long long)(elements ? elements : skip),
                     elements ? "elements" : "bytes", length - at);
            return -1;
        }
        at += (size_t)skip;
        pending += elements;
        pending--;
    }
    return 0;
}

int cd_check_value(const char *bytes, size_t length, int depth, char *why, size_t why_size)
{
    msgpack_unpacked unpacked;
    size_t offset = 0;
    msgpack_unpack_return status;
    int result;
    if (bytes == NULL || length == 0) {
        snprintf(why, why_size, "no msgpack bytes");
        return -1;
    }
    if (plausible((const unsigned char *)bytes, length, why, why_size) != 0) return -1;
    msgpack_unpacked_init(&unpacked);
    status = msgpack_unpack_next(&unpacked, bytes, length, &offset);
    if (status != MSGPACK_UNPACK_SUCCESS) {
        snprintf(why, why_size,
                 status == MSGPACK_UNPACK_CONTINUE
                     ? "the msgpack value is cut short (%zu bytes)"
                     : "the %zu bytes are not msgpack (or nest deeper than msgpack-c reads, 32 levels)",
                 length);
        result = -1;
    } else if (offset != length) {
        snprintf(why, why_size, "%zu bytes follow the msgpack value: pass exactly one value",
                 length - offset);
        result = -1;
    } else {
        result = check(&unpacked.data, depth, why, why_size);
    }
    msgpack_unpacked_destroy(&unpacked);
    return result;
}
