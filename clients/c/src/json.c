/* JSON text (RFC 8259, strictly) to one msgpack value, for callers that
 * cannot build msgpack themselves (MATLAB's jsonencode, LabVIEW's Flatten To
 * JSON). The text is parsed into a small tree first, so that every map and
 * array is packed by msgpack-c with its exact size. Any error names the byte
 * offset where the text went wrong. */
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

enum node_type { J_NULL, J_FALSE, J_TRUE, J_INT, J_UINT, J_FLOAT, J_STRING, J_ARRAY, J_OBJECT };

typedef struct node {
    int type;
    uint32_t count;    /* children of an array or object */
    size_t first;      /* index of the first child, for arrays and objects */
    size_t next;       /* index of the next sibling (0: none; node 0 is the root) */
    size_t key, key_length; /* a member's key: offset into the text arena */
    size_t key_at;     /* where the member's key starts in the JSON text */
    size_t text, text_length; /* a string's decoded UTF-8 */
    union { int64_t i; uint64_t u; double d; } number;
} node;

typedef struct parser {
    const char *json;
    size_t length;
    size_t at;
    node *nodes;
    size_t node_count, node_capacity;
    char *text;
    size_t text_length, text_capacity;
    char *why;
    size_t why_size;
    int failed_memory;
} parser;

static int fail(parser *p, size_t at, const char *what)
{
    snprintf(p->why, p->why_size, "JSON: %s at byte %zu", what, at);
    return -1;
}

static void skip_space(parser *p)
{
    while (p->at < p->length) {
        char c = p->json[p->at];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') return;
        p->at++;
    }
}

static int new_node(parser *p, size_t *index)
{
    if (p->node_count == p->node_capacity) {
        size_t capacity = p->node_capacity ? p->node_capacity * 2 : 64;
        node *nodes = realloc(p->nodes, capacity * sizeof *nodes);
        if (nodes == NULL) { p->failed_memory = 1; return fail(p, p->at, "out of memory"); }
        p->nodes = nodes;
        p->node_capacity = capacity;
    }
    memset(&p->nodes[p->node_count], 0, sizeof(node));
    *index = p->node_count++;
    return 0;
}

static int put_text(parser *p, const char *bytes, size_t length)
{
    if (length == 0) return 0;
    if (p->text_length + length > p->text_capacity) {
        size_t capacity = p->text_capacity ? p->text_capacity : 256;
        char *text;
        while (capacity < p->text_length + length) capacity *= 2;
        text = realloc(p->text, capacity);
        if (text == NULL) { p->failed_memory = 1; return fail(p, p->at, "out of memory"); }
        p->text = text;
        p->text_capacity = capacity;
    }
    memcpy(p->text + p->text_length, bytes, length);
    p->text_length += length;
    return 0;
}

static int hex4(parser *p, size_t at, uint32_t *value)
{
    size_t index;
    *value = 0;
    if (at + 4 > p->length) return fail(p, at, "\\u needs four hex digits");
    for (index = 0; index < 4; index++) {
        char c = p->json[at + index];
        uint32_t digit;
        if (c >= '0' && c <= '9') digit = (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f') digit = (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') digit = (uint32_t)(c - 'A' + 10);
        else return fail(p, at + index, "\\u needs four hex digits");
        *value = *value * 16 + digit;
    }
    return 0;
}

static int put_code_point(parser *p, uint32_t point)
{
    char bytes[4];
    size_t length;
    if (point < 0x80) { bytes[0] = (char)point; length = 1; }
    else if (point < 0x800) {
        bytes[0] = (char)(0xC0 | (point >> 6));
        bytes[1] = (char)(0x80 | (point & 0x3F));
        length = 2;
    } else if (point < 0x10000) {
        bytes[0] = (char)(0xE0 | (point >> 12));
        bytes[1] = (char)(0x80 | ((point >> 6) & 0x3F));
        bytes[2] = (char)(0x80 | (point & 0x3F));
        length = 3;
    } else {
        bytes[0] = (char)(0xF0 | (point >> 18));
        bytes[1] = (char)(0x80 | ((point >> 12) & 0x3F));
        bytes[2] = (char)(0x80 | ((point >> 6) & 0x3F));
        bytes[3] = (char)(0x80 | (point & 0x3F));
        length = 4;
    }
    return put_text(p, bytes, length);
}

/* A string starting at the opening quote: its decoded text goes to the arena. */
static int parse_string(parser *p, size_t *offset, size_t *length)
{
    size_t start = p->text_length;
    p->at++; /* the quote */
    for (;;) {
        size_t run = p->at;
        unsigned char c;
        while (p->at < p->length) {
            c = (unsigned char)p->json[p->at];
            if (c == '"' || c == '\\' || c < 0x20) break;
            p->at++;
        }
        if (cd_check_utf8(p->json + run, p->at - run) != 0)
            return fail(p, run, "a string is not valid UTF-8");
        if (put_text(p, p->json + run, p->at - run) != 0) return -1;
        if (p->at >= p->length) return fail(p, p->at, "a string is not closed");
        c = (unsigned char)p->json[p->at];
        if (c == '"') break;
        if (c < 0x20) return fail(p, p->at, "a control character must be escaped in a string");
        /* a backslash */
        if (p->at + 1 >= p->length) return fail(p, p->at, "a string is not closed");
        {
            char escape = p->json[p->at + 1];
            const char *plain = NULL;
            switch (escape) {
            case '"': plain = "\""; break;
            case '\\': plain = "\\"; break;
            case '/': plain = "/"; break;
            case 'b': plain = "\b"; break;
            case 'f': plain = "\f"; break;
            case 'n': plain = "\n"; break;
            case 'r': plain = "\r"; break;
            case 't': plain = "\t"; break;
            case 'u': break;
            default: return fail(p, p->at, "unknown escape in a string");
            }
            if (plain != NULL) {
                if (put_text(p, plain, 1) != 0) return -1;
                p->at += 2;
            } else {
                uint32_t point, low;
                if (hex4(p, p->at + 2, &point) != 0) return -1;
                if (point >= 0xDC00 && point <= 0xDFFF)
                    return fail(p, p->at, "a lone low surrogate \\u escape");
                if (point >= 0xD800 && point <= 0xDBFF) {
                    size_t pair = p->at + 6;
                    if (pair + 1 >= p->length || p->json[pair] != '\\' || p->json[pair + 1] != 'u')
                        return fail(p, p->at, "a high surrogate \\u escape without its low half");
                    if (hex4(p, pair + 2, &low) != 0) return -1;
                    if (low < 0xDC00 || low > 0xDFFF)
                        return fail(p, pair, "a high surrogate \\u escape without its low half");
                    point = 0x10000 + ((point - 0xD800) << 10) + (low - 0xDC00);
                    p->at += 6;
                }
                if (put_code_point(p, point) != 0) return -1;
                p->at += 6;
            }
        }
    }
    p->at++; /* the closing quote */
    *offset = start;
    *length = p->text_length - start;
    return 0;
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }

static int parse_number(parser *p, node *out)
{
    size_t start = p->at, index;
    int negative = 0, integral = 1;
    char buffer[64];
    char *copy = buffer, *end;
    size_t length;
    if (p->json[p->at] == '-') { negative = 1; p->at++; }
    if (p->at >= p->length || !is_digit(p->json[p->at])) return fail(p, start, "a number has no digits");
    if (p->json[p->at] == '0') p->at++;
    else while (p->at < p->length && is_digit(p->json[p->at])) p->at++;
    if (p->at < p->length && p->json[p->at] == '.') {
        integral = 0;
        p->at++;
        if (p->at >= p->length || !is_digit(p->json[p->at]))
            return fail(p, p->at, "a digit must follow the decimal point");
        while (p->at < p->length && is_digit(p->json[p->at])) p->at++;
    }
    if (p->at < p->length && (p->json[p->at] == 'e' || p->json[p->at] == 'E')) {
        integral = 0;
        p->at++;
        if (p->at < p->length && (p->json[p->at] == '+' || p->json[p->at] == '-')) p->at++;
        if (p->at >= p->length || !is_digit(p->json[p->at]))
            return fail(p, p->at, "an exponent has no digits");
        while (p->at < p->length && is_digit(p->json[p->at])) p->at++;
    }
    if (integral) {
        uint64_t value = 0;
        for (index = start + (size_t)negative; index < p->at; index++) {
            uint64_t digit = (uint64_t)(p->json[index] - '0');
            if (value > (UINT64_MAX - digit) / 10)
                return fail(p, start, "an integer is outside -2^63 .. 2^64-1");
            value = value * 10 + digit;
        }
        if (negative) {
            if (value > (uint64_t)INT64_MAX + 1)
                return fail(p, start, "an integer is outside -2^63 .. 2^64-1");
            out->type = J_INT;
            out->number.i = value == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)value;
        } else {
            out->type = J_UINT;
            out->number.u = value;
        }
        return 0;
    }
    length = p->at - start;
    if (length >= sizeof buffer) {
        copy = malloc(length + 1);
        if (copy == NULL) { p->failed_memory = 1; return fail(p, start, "out of memory"); }
    }
    memcpy(copy, p->json + start, length);
    copy[length] = '\0';
    {
        /* strtod reads the locale's decimal point (a ',' in some locales). */
        const char *point = localeconv()->decimal_point;
        char *dot = strchr(copy, '.');
        if (dot != NULL && point != NULL && point[0] != '\0' && point[0] != '.' && point[1] == '\0')
            *dot = point[0];
    }
    out->type = J_FLOAT;
    out->number.d = strtod(copy, &end);
    index = (size_t)(end - copy);
    if (copy != buffer) free(copy);
    if (index != length) return fail(p, start, "a number cannot be read");
    if (isinf(out->number.d)) return fail(p, start, "a number is too large for float 64");
    return 0;
}

static int literal(parser *p, const char *word, int type, node *out)
{
    size_t length = strlen(word);
    if (p->length - p->at < length || memcmp(p->json + p->at, word, length) != 0)
        return fail(p, p->at, "expected a value");
    p->at += length;
    out->type = type;
    return 0;
}

/* Decoded text in the arena (which is NULL while every string is empty). */
static const char *text_at(const parser *p, size_t offset, size_t length)
{
    return length ? p->text + offset : "";
}

typedef struct member_key {
    const char *text;
    size_t length;
    size_t at;
} member_key;

static int compare_keys(const void *left, const void *right)
{
    const member_key *a = left, *b = right;
    size_t shorter = a->length < b->length ? a->length : b->length;
    int order = shorter ? memcmp(a->text, b->text, shorter) : 0;
    if (order != 0) return order;
    return a->length < b->length ? -1 : a->length > b->length;
}

/* A key twice in one object is refused: which value was meant cannot be told. */
static int check_unique_keys(parser *p, size_t index)
{
    uint32_t count = p->nodes[index].count, done;
    size_t child = p->nodes[index].first;
    member_key *keys;
    if (count < 2) return 0;
    keys = malloc(count * sizeof *keys);
    if (keys == NULL) { p->failed_memory = 1; return fail(p, p->at, "out of memory"); }
    for (done = 0; done < count; done++, child = p->nodes[child].next) {
        keys[done].text = text_at(p, p->nodes[child].key, p->nodes[child].key_length);
        keys[done].length = p->nodes[child].key_length;
        keys[done].at = p->nodes[child].key_at;
    }
    qsort(keys, count, sizeof *keys, compare_keys);
    for (done = 1; done < count; done++)
        if (compare_keys(&keys[done - 1], &keys[done]) == 0) {
            size_t at = keys[done].at > keys[done - 1].at ? keys[done].at : keys[done - 1].at;
            free(keys);
            return fail(p, at, "a key appears twice in an object");
        }
    free(keys);
    return 0;
}

static int parse_value(parser *p, size_t index, int depth);

static int parse_container(parser *p, size_t index, int depth, int object)
{
    char close = object ? '}' : ']';
    size_t previous = 0;
    uint32_t count = 0;
    if (depth == 0) return fail(p, p->at, "the value is nested too deep");
    p->at++; /* [ or { */
    skip_space(p);
    if (p->at < p->length && p->json[p->at] == close) {
        p->at++;
        return 0;
    }
    for (;;) {
        size_t child, key = 0, key_length = 0, key_at = 0;
        skip_space(p);
        if (object) {
            key_at = p->at;
            if (p->at >= p->length || p->json[p->at] != '"')
                return fail(p, p->at, "expected a string key");
            if (parse_string(p, &key, &key_length) != 0) return -1;
            if (key_length > 0 && p->text[key] == '$')
                return fail(p, key_at, "a key starts with '$', kept for collectord's tags");
            skip_space(p);
            if (p->at >= p->length || p->json[p->at] != ':') return fail(p, p->at, "expected ':'");
            p->at++;
            skip_space(p);
        }
        if (new_node(p, &child) != 0) return -1;
        p->nodes[child].key = key;
        p->nodes[child].key_length = key_length;
        p->nodes[child].key_at = key_at;
        if (count == 0) p->nodes[index].first = child;
        else p->nodes[previous].next = child;
        previous = child;
        if (count == UINT32_MAX) return fail(p, p->at, "too many elements");
        count++;
        if (parse_value(p, child, depth - 1) != 0) return -1;
        skip_space(p);
        if (p->at >= p->length) return fail(p, p->at, object ? "expected ',' or '}'" : "expected ',' or ']'");
        if (p->json[p->at] == ',') { p->at++; continue; }
        if (p->json[p->at] == close) { p->at++; break; }
        return fail(p, p->at, object ? "expected ',' or '}'" : "expected ',' or ']'");
    }
    p->nodes[index].count = count;
    return object ? check_unique_keys(p, index) : 0;
}

static int parse_value(parser *p, size_t index, int depth)
{
    node scratch;
    skip_space(p);
    if (p->at >= p->length) return fail(p, p->at, "expected a value");
    memset(&scratch, 0, sizeof scratch);
    switch (p->json[p->at]) {
    case '{':
        p->nodes[index].type = J_OBJECT;
        return parse_container(p, index, depth, 1);
    case '[':
        p->nodes[index].type = J_ARRAY;
        return parse_container(p, index, depth, 0);
    case '"': {
        size_t offset, length;
        if (parse_string(p, &offset, &length) != 0) return -1;
        p->nodes[index].type = J_STRING;
        p->nodes[index].text = offset;
        p->nodes[index].text_length = length;
        return 0;
    }
    case 't': if (literal(p, "true", J_TRUE, &scratch) != 0) return -1; break;
    case 'f': if (literal(p, "false", J_FALSE, &scratch) != 0) return -1; break;
    case 'n': if (literal(p, "null", J_NULL, &scratch) != 0) return -1; break;
    default:
        if (p->json[p->at] == '-' || is_digit(p->json[p->at])) {
            if (parse_number(p, &scratch) != 0) return -1;
            break;
        }
        return fail(p, p->at, "expected a value");
    }
    p->nodes[index].type = scratch.type;
    p->nodes[index].number = scratch.number;
    return 0;
}

static void emit(const parser *p, size_t index, msgpack_packer *packer)
{
    const node *n = &p->nodes[index];
    size_t child;
    uint32_t done;
    switch (n->type) {
    case J_NULL: msgpack_pack_nil(packer); return;
    case J_FALSE: msgpack_pack_false(packer); return;
    case J_TRUE: msgpack_pack_true(packer); return;
    case J_INT: msgpack_pack_int64(packer, n->number.i); return;
    case J_UINT: msgpack_pack_uint64(packer, n->number.u); return;
    case J_FLOAT: msgpack_pack_double(packer, n->number.d); return;
    case J_STRING: cd_pack_text(packer, text_at(p, n->text, n->text_length), n->text_length); return;
    case J_ARRAY: msgpack_pack_array(packer, n->count); break;
    default: msgpack_pack_map(packer, n->count); break;
    }
    for (child = n->first, done = 0; done < n->count; done++, child = p->nodes[child].next) {
        if (n->type == J_OBJECT)
            cd_pack_text(packer, text_at(p, p->nodes[child].key, p->nodes[child].key_length),
                         p->nodes[child].key_length);
        emit(p, child, packer);
    }
}

int cd_json_to_msgpack(const char *json, size_t length, int depth, msgpack_packer *packer,
                       char *why, size_t why_size)
{
    parser p;
    size_t root;
    int result = -1;
    memset(&p, 0, sizeof p);
    p.json = json;
    p.length = length;
    p.why = why;
    p.why_size = why_size;
    if (json == NULL) {
        snprintf(why, why_size, "JSON text is NULL");
        return -1;
    }
    if (new_node(&p, &root) == 0 && parse_value(&p, root, depth) == 0) {
        skip_space(&p);
        if (p.at != p.length) fail(&p, p.at, "text follows the value");
        else {
            emit(&p, root, packer);
            result = 0;
        }
    }
    free(p.nodes);
    free(p.text);
    return result;
}
